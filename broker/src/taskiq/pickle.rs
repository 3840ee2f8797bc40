//! Python pickles as data only: the plain values Taskiq stores (None, bool, int, float, str,
//! list, tuple, dict, set), read from protocols 0–5 and written as protocol 4.
//!
//! Why by hand, beside the `serde-pickle` crate: kiq's rule is that a pickle which names any
//! Python global (a class, a function: `GLOBAL`, `STACK_GLOBAL`, `REDUCE`, `BUILD`, `INST`, `OBJ`,
//! `NEWOBJ`, extension codes, persistent ids) is refused as a whole, with the opcode in the
//! error. `serde-pickle` instead resolves a set of well-known globals into data (`set`,
//! `bytearray`, `collections.OrderedDict`, `copy_reg._reconstructor`), so it reads pickles that
//! Python would only build by calling something. The subset kiq needs is a few dozen opcodes.
//! Nothing here ever calls anything: a refused pickle is never executed, on either side.

use serde_json::{Map, Number, Value};

/// Why a pickle was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PickleError {
    /// The pickle references a Python class or callable: kiq reads pickles as data only.
    #[error("the pickle references a Python class or callable (opcode {0}): kiq reads pickles as data only and refuses it")]
    Refused(&'static str),
    /// The bytes are not a pickle kiq can read.
    #[error("not a readable pickle: {0}")]
    Invalid(String),
}

fn invalid(what: impl Into<String>) -> PickleError {
    PickleError::Invalid(what.into())
}

/// How deeply containers may nest (deeper, or a self-referencing container, is refused).
const MAX_DEPTH: usize = 128;

/// The most values one pickle may read into (or its length in bytes, if larger).
const MAX_VALUES: usize = 1_000_000;

/// A value while the pickle is read: containers hold indexes into the arena, so that a value
/// memoized and then filled (as Python's pickler writes containers) is seen filled wherever it
/// is fetched from the memo.
#[derive(Debug, Clone)]
enum Node {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    List(Vec<usize>),
    Dict(Vec<(usize, usize)>),
}

#[derive(Debug, Clone, Copy)]
enum Item {
    Mark,
    Node(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], PickleError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or_else(|| invalid("truncated"))?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PickleError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PickleError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PickleError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, PickleError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn len(&mut self, n: u64) -> Result<usize, PickleError> {
        usize::try_from(n).map_err(|_| invalid("length out of range"))
    }
    fn line(&mut self) -> Result<&'a str, PickleError> {
        std::str::from_utf8(self.raw_line()?).map_err(|_| invalid("line is not UTF-8"))
    }
    fn raw_line(&mut self) -> Result<&'a [u8], PickleError> {
        let rest = &self.bytes[self.pos..];
        let end = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or_else(|| invalid("unterminated line"))?;
        self.pos += end + 1;
        Ok(&rest[..end])
    }
    fn utf8(&mut self, n: usize) -> Result<String, PickleError> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| invalid("string is not UTF-8"))
    }
}

/// Reads a pickle (protocol 0 to 5) of plain data into a JSON value. Tuples and sets become
/// arrays; dict keys must be strings, integers must fit in 64 bits; bytes are refused.
pub fn loads(bytes: &[u8]) -> Result<Value, PickleError> {
    let mut r = Reader { bytes, pos: 0 };
    let mut arena: Vec<Node> = Vec::new();
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    let push = |arena: &mut Vec<Node>, stack: &mut Vec<Item>, n: Node| {
        arena.push(n);
        stack.push(Item::Node(arena.len() - 1));
    };
    fn top(stack: &[Item]) -> Result<usize, PickleError> {
        match stack.last() {
            Some(Item::Node(i)) => Ok(*i),
            _ => Err(invalid("stack underflow")),
        }
    }
    fn pop(stack: &mut Vec<Item>) -> Result<usize, PickleError> {
        match stack.pop() {
            Some(Item::Node(i)) => Ok(i),
            _ => Err(invalid("stack underflow")),
        }
    }
    fn pop_mark(stack: &mut Vec<Item>) -> Result<Vec<usize>, PickleError> {
        let at = stack
            .iter()
            .rposition(|i| matches!(i, Item::Mark))
            .ok_or_else(|| invalid("no mark"))?;
        let items = stack
            .drain(at..)
            .skip(1)
            .map(|i| match i {
                Item::Node(n) => Ok(n),
                Item::Mark => Err(invalid("nested mark")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(items)
    }
    fn set_items(arena: &mut [Node], dict: usize, items: &[usize]) -> Result<(), PickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(invalid("odd number of dict items"));
        }
        match &mut arena[dict] {
            Node::Dict(pairs) => {
                pairs.extend(items.chunks(2).map(|c| (c[0], c[1])));
                Ok(())
            }
            _ => Err(invalid("SETITEMS on a non-dict")),
        }
    }
    fn append(arena: &mut [Node], list: usize, items: &[usize]) -> Result<(), PickleError> {
        match &mut arena[list] {
            Node::List(xs) => {
                xs.extend_from_slice(items);
                Ok(())
            }
            _ => Err(invalid("APPENDS on a non-list")),
        }
    }
    loop {
        let op = r.u8()?;
        match op {
            b'.' => break,
            0x80 => {
                let proto = r.u8()?;
                if proto > 5 {
                    return Err(invalid(format!("unsupported protocol {proto}")));
                }
            }
            0x95 => {
                r.u64()?;
            }
            b'N' => push(&mut arena, &mut stack, Node::Null),
            0x88 => push(&mut arena, &mut stack, Node::Bool(true)),
            0x89 => push(&mut arena, &mut stack, Node::Bool(false)),
            b'K' => {
                let v = r.u8()?;
                push(&mut arena, &mut stack, Node::Int(v.into()))
            }
            b'M' => {
                let v = r.u16()?;
                push(&mut arena, &mut stack, Node::Int(v.into()))
            }
            b'J' => {
                let v = r.u32()? as i32;
                push(&mut arena, &mut stack, Node::Int(v.into()))
            }
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    u64::from(r.u8()?)
                } else {
                    u64::from(r.u32()?)
                };
                let n = r.len(n)?;
                if n > 16 {
                    return Err(invalid("integer too large"));
                }
                let b = r.take(n)?;
                let mut v: i128 = 0;
                for (i, byte) in b.iter().enumerate() {
                    v |= i128::from(*byte) << (8 * i);
                }
                if n > 0 && n < 16 && b[n - 1] & 0x80 != 0 {
                    v -= 1i128 << (8 * n);
                }
                push(&mut arena, &mut stack, Node::Int(v))
            }
            b'I' => {
                let l = r.line()?;
                let node = match l {
                    "01" => Node::Bool(true),
                    "00" => Node::Bool(false),
                    s => Node::Int(s.parse().map_err(|_| invalid("bad INT"))?),
                };
                push(&mut arena, &mut stack, node)
            }
            b'L' => {
                let l = r.line()?;
                let v = l
                    .trim_end_matches('L')
                    .parse()
                    .map_err(|_| invalid("bad LONG"))?;
                push(&mut arena, &mut stack, Node::Int(v))
            }
            b'G' => {
                let mut a = [0u8; 8];
                a.copy_from_slice(r.take(8)?);
                push(&mut arena, &mut stack, Node::Float(f64::from_be_bytes(a)))
            }
            b'F' => {
                let v = r.line()?.parse().map_err(|_| invalid("bad FLOAT"))?;
                push(&mut arena, &mut stack, Node::Float(v))
            }
            0x8c | b'U' => {
                let n = usize::from(r.u8()?);
                let s = r.utf8(n)?;
                push(&mut arena, &mut stack, Node::Str(s))
            }
            b'X' | b'T' => {
                let n = u64::from(r.u32()?);
                let n = r.len(n)?;
                let s = r.utf8(n)?;
                push(&mut arena, &mut stack, Node::Str(s))
            }
            0x8d => {
                let n = r.u64()?;
                let n = r.len(n)?;
                let s = r.utf8(n)?;
                push(&mut arena, &mut stack, Node::Str(s))
            }
            b'V' => {
                let s = raw_unicode_escape(r.raw_line()?)?;
                push(&mut arena, &mut stack, Node::Str(s))
            }
            b'B' | b'C' | 0x8e | 0x96 => {
                return Err(invalid("bytes values are not supported (only str)"));
            }
            b'}' => push(&mut arena, &mut stack, Node::Dict(Vec::new())),
            b']' | b')' | 0x8f => push(&mut arena, &mut stack, Node::List(Vec::new())),
            b'(' => stack.push(Item::Mark),
            b'd' => {
                let items = pop_mark(&mut stack)?;
                arena.push(Node::Dict(Vec::new()));
                let d = arena.len() - 1;
                set_items(&mut arena, d, &items)?;
                stack.push(Item::Node(d));
            }
            b'l' | b't' | 0x91 => {
                let items = pop_mark(&mut stack)?;
                push(&mut arena, &mut stack, Node::List(items))
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                if stack.len() < n {
                    return Err(invalid("stack underflow"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack)?);
                }
                items.reverse();
                push(&mut arena, &mut stack, Node::List(items))
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                let d = top(&stack)?;
                set_items(&mut arena, d, &[k, v])?;
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                let d = top(&stack)?;
                set_items(&mut arena, d, &items)?;
            }
            b'a' => {
                let v = pop(&mut stack)?;
                let l = top(&stack)?;
                append(&mut arena, l, &[v])?;
            }
            b'e' | 0x90 => {
                let items = pop_mark(&mut stack)?;
                let l = top(&stack)?;
                append(&mut arena, l, &items)?;
            }
            b'p' => {
                let k = r.line()?.parse().map_err(|_| invalid("bad PUT"))?;
                memo.insert(k, top(&stack)?);
            }
            b'q' => {
                let k = u64::from(r.u8()?);
                memo.insert(k, top(&stack)?);
            }
            b'r' => {
                let k = u64::from(r.u32()?);
                memo.insert(k, top(&stack)?);
            }
            0x94 => {
                let k = memo.len() as u64;
                memo.insert(k, top(&stack)?);
            }
            b'g' | b'h' | b'j' => {
                let k = match op {
                    b'g' => r.line()?.parse().map_err(|_| invalid("bad GET"))?,
                    b'h' => u64::from(r.u8()?),
                    _ => u64::from(r.u32()?),
                };
                let i = *memo.get(&k).ok_or_else(|| invalid("memo miss"))?;
                stack.push(Item::Node(i));
            }
            b'0' => {
                stack.pop().ok_or_else(|| invalid("stack underflow"))?;
            }
            b'1' => {
                pop_mark(&mut stack)?;
            }
            b'2' => {
                let i = top(&stack)?;
                stack.push(Item::Node(i));
            }
            b'c' => return Err(PickleError::Refused("GLOBAL")),
            0x93 => return Err(PickleError::Refused("STACK_GLOBAL")),
            b'R' => return Err(PickleError::Refused("REDUCE")),
            b'b' => return Err(PickleError::Refused("BUILD")),
            b'i' => return Err(PickleError::Refused("INST")),
            b'o' => return Err(PickleError::Refused("OBJ")),
            0x81 => return Err(PickleError::Refused("NEWOBJ")),
            0x92 => return Err(PickleError::Refused("NEWOBJ_EX")),
            b'P' => return Err(PickleError::Refused("PERSID")),
            b'Q' => return Err(PickleError::Refused("BINPERSID")),
            0x82..=0x84 => return Err(PickleError::Refused("EXT")),
            0x97 | 0x98 => return Err(invalid("out-of-band buffers are not supported")),
            other => return Err(invalid(format!("unknown opcode 0x{other:02x}"))),
        }
    }
    if r.pos != bytes.len() {
        return Err(invalid("trailing bytes after STOP"));
    }
    let root = match stack.as_slice() {
        [Item::Node(i)] => *i,
        _ => return Err(invalid("the pickle does not end with one value")),
    };
    // A value reached twice through the memo is copied each time: a budget bounds the copies
    // (a few hundred bytes of `[y, y]` nested 60 deep would otherwise expand to 2^60 values).
    let mut budget = MAX_VALUES.max(bytes.len());
    to_value(&arena, root, 0, &mut budget)
}

/// Python's `raw-unicode-escape` (protocol 0's `UNICODE`): Latin-1 bytes, with `\uXXXX` and
/// `\UXXXXXXXX` escapes.
fn raw_unicode_escape(b: &[u8]) -> Result<String, PickleError> {
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let len = match (b[i], b.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => 0,
        };
        if len > 0 && i + 2 + len <= b.len() {
            let c = std::str::from_utf8(&b[i + 2..i + 2 + len])
                .ok()
                .and_then(|hex| u32::from_str_radix(hex, 16).ok())
                .and_then(char::from_u32)
                .ok_or_else(|| invalid("bad escape in a protocol-0 string"))?;
            out.push(c);
            i += 2 + len;
        } else {
            out.push(char::from(b[i]));
            i += 1;
        }
    }
    Ok(out)
}

fn to_value(
    arena: &[Node],
    i: usize,
    depth: usize,
    budget: &mut usize,
) -> Result<Value, PickleError> {
    if depth > MAX_DEPTH {
        return Err(invalid("nested too deeply (or refers to itself)"));
    }
    *budget = budget
        .checked_sub(1)
        .ok_or_else(|| invalid("too many values (shared containers expand too far)"))?;
    Ok(match &arena[i] {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Int(v) => {
            if let Ok(v) = i64::try_from(*v) {
                Value::from(v)
            } else if let Ok(v) = u64::try_from(*v) {
                Value::from(v)
            } else {
                return Err(invalid("integer does not fit in 64 bits"));
            }
        }
        Node::Float(f) => Number::from_f64(*f)
            .map(Value::Number)
            .ok_or_else(|| invalid("NaN or infinite float"))?,
        Node::Str(s) => Value::String(s.clone()),
        Node::List(xs) => Value::Array(
            xs.iter()
                .map(|x| to_value(arena, *x, depth + 1, budget))
                .collect::<Result<_, _>>()?,
        ),
        Node::Dict(pairs) => {
            let mut m = Map::new();
            for (k, v) in pairs {
                let key = match &arena[*k] {
                    Node::Str(s) => s.clone(),
                    _ => return Err(invalid("dict keys must be strings")),
                };
                m.insert(key, to_value(arena, *v, depth + 1, budget)?);
            }
            Value::Object(m)
        }
    })
}

/// Writes `value` as a protocol 4 pickle (what `pickle.dumps` gives on CPython 3.8–3.13, minus
/// the optional framing). Objects are written in their map's order.
pub fn dumps(value: &Value) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    write(&mut out, value);
    out.push(b'.');
    out
}

/// Writes a dict whose entries are given in order (a top-level record with a fixed key order).
pub fn dumps_entries(entries: &[(&str, Value)]) -> Vec<u8> {
    let mut out = vec![0x80, 4];
    write_dict(&mut out, entries.iter().map(|(k, v)| (*k, v)));
    out.push(b'.');
    out
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    if let Ok(n) = u8::try_from(b.len()) {
        out.push(0x8c);
        out.push(n);
    } else {
        out.push(b'X');
        // Strings are bounded by the payload cap, far below 4 GiB.
        out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    }
    out.extend_from_slice(b);
}

fn write_int(out: &mut Vec<u8>, v: i128) {
    if (0..=255).contains(&v) {
        out.extend_from_slice(&[b'K', v as u8]);
    } else if let Ok(v) = i32::try_from(v) {
        out.push(b'J');
        out.extend_from_slice(&v.to_le_bytes());
    } else {
        // LONG1: little-endian two's complement, as short as keeps the sign.
        let mut b = v.to_le_bytes().to_vec();
        while b.len() > 1 {
            let last = b[b.len() - 1];
            let prev = b[b.len() - 2];
            if (last == 0 && prev & 0x80 == 0) || (last == 0xff && prev & 0x80 != 0) {
                b.pop();
            } else {
                break;
            }
        }
        out.push(0x8a);
        out.push(b.len() as u8);
        out.extend_from_slice(&b);
    }
}

fn write_dict<'a>(out: &mut Vec<u8>, entries: impl ExactSizeIterator<Item = (&'a str, &'a Value)>) {
    out.push(b'}');
    if entries.len() == 0 {
        return;
    }
    out.push(b'(');
    for (k, v) in entries {
        write_str(out, k);
        write(out, v);
    }
    out.push(b'u');
}

fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(b'N'),
        Value::Bool(true) => out.push(0x88),
        Value::Bool(false) => out.push(0x89),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_int(out, i.into())
            } else if let Some(u) = n.as_u64() {
                write_int(out, u.into())
            } else {
                out.push(b'G');
                out.extend_from_slice(&n.as_f64().unwrap_or(0.0).to_be_bytes());
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(xs) => {
            out.push(b']');
            if !xs.is_empty() {
                out.push(b'(');
                for x in xs {
                    write(out, x);
                }
                out.push(b'e');
            }
        }
        Value::Object(m) => write_dict(out, m.iter().map(|(k, v)| (k.as_str(), v))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `pickle.dumps` of Taskiq's success result for `add(2, 3)`, as observed (protocol 4).
    const SUCCESS: &[u8] = b"\x80\x04\x95\xba\x00\x00\x00\x00\x00\x00\x00}\x94(\x8c\x06is_err\x94\x89\x8c\x03log\x94N\x8c\x0creturn_value\x94K\x05\x8c\x0eexecution_time\x94G\x00\x00\x00\x00\x00\x00\x00\x00\x8c\x06labels\x94}\x94(\x8c\x0eretry_on_error\x94\x89\x8c\x0bmax_retries\x94K\x00\x8c\x07timeout\x94K\x1e\x8c\x0bdescription\x94\x8c$a + b (served by kiq in Taskiq mode)\x94u\x8c\x05error\x94Nu.";

    /// The error result of a task raising `ValueError("boom: kiq interop")`.
    const ERROR: &[u8] = b"\x80\x04\x95\"\x01\x00\x00\x00\x00\x00\x00}\x94(\x8c\x06is_err\x94\x88\x8c\x03log\x94N\x8c\x0creturn_value\x94N\x8c\x0eexecution_time\x94G?\x84z\xe1G\xae\x14{\x8c\x06labels\x94}\x94(\x8c\x0eretry_on_error\x94\x89\x8c\x0bdescription\x94\x8c\x1dalways fails with its message\x94u\x8c\x05error\x94}\x94(\x8c\x08exc_type\x94\x8c\nValueError\x94\x8c\x0bexc_message\x94]\x94\x8c\x11boom: kiq interop\x94a\x8c\nexc_module\x94\x8c\x08builtins\x94\x8c\texc_cause\x94N\x8c\x0bexc_context\x94N\x8c\x14exc_suppress_context\x94\x89uu.";

    #[test]
    fn reads_what_python_wrote() {
        let v = loads(SUCCESS).unwrap();
        assert_eq!(v["is_err"], json!(false));
        assert_eq!(v["return_value"], json!(5));
        assert_eq!(v["labels"]["timeout"], json!(30));
        assert_eq!(v["error"], Value::Null);
        let e = loads(ERROR).unwrap();
        assert_eq!(e["is_err"], json!(true));
        assert_eq!(e["execution_time"], json!(0.01));
        assert_eq!(e["error"]["exc_message"], json!(["boom: kiq interop"]));
        assert_eq!(e["error"]["exc_type"], json!("ValueError"));
    }

    fn unhex(h: &str) -> Vec<u8> {
        (0..h.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap())
            .collect()
    }

    /// `pickle.dumps(d, protocol=p)` for p = 0..=5 by CPython 3.11, of
    /// `{"is_err": False, "log": None, "return_value": [1, -2, 300, 70000, 2**40, -(2**63), 1.5,
    /// "h\u00e9llo \u2713", (1, "t"), {"k": True}], "execution_time": 0.25, "labels": {"n": 3},
    /// "error": None}`.
    const EVERY_PROTOCOL: [&str; 6] = [
        "286470300a5669735f6572720a70310a4930300a73566c6f670a70320a4e735672657475726e5f76616c75650a70330a286c70340a49310a61492d320a61493330300a614937303030300a614c313039393531313632373737364c0a614c2d393232333337323033363835343737353830384c0a6146312e350a615668e96c6c6f205c75323731330a70350a612849310a56740a70360a7470370a61286470380a566b0a70390a4930310a73617356657865637574696f6e5f74696d650a7031300a46302e32350a73566c6162656c730a7031310a28647031320a566e0a7031330a49330a7373566572726f720a7031340a4e732e",
        "7d710028580600000069735f65727271014930300a58030000006c6f6771024e580c00000072657475726e5f76616c756571035d7104284b014afeffffff4d2c014a701101004c313039393531313632373737364c0a4c2d393232333337323033363835343737353830384c0a473ff8000000000000580a00000068c3a96c6c6f20e29c937105284b0158010000007471067471077d710858010000006b71094930310a7365580e000000657865637574696f6e5f74696d65710a473fd000000000000058060000006c6162656c73710b7d710c58010000006e710d4b037358050000006572726f72710e4e752e",
        "80027d710028580600000069735f65727271018958030000006c6f6771024e580c00000072657475726e5f76616c756571035d7104284b014afeffffff4d2c014a701101008a060000000000018a080000000000000080473ff8000000000000580a00000068c3a96c6c6f20e29c9371054b0158010000007471068671077d710858010000006b7109887365580e000000657865637574696f6e5f74696d65710a473fd000000000000058060000006c6162656c73710b7d710c58010000006e710d4b037358050000006572726f72710e4e752e",
        "80037d710028580600000069735f65727271018958030000006c6f6771024e580c00000072657475726e5f76616c756571035d7104284b014afeffffff4d2c014a701101008a060000000000018a080000000000000080473ff8000000000000580a00000068c3a96c6c6f20e29c9371054b0158010000007471068671077d710858010000006b7109887365580e000000657865637574696f6e5f74696d65710a473fd000000000000058060000006c6162656c73710b7d710c58010000006e710d4b037358050000006572726f72710e4e752e",
        "800495a5000000000000007d94288c0669735f65727294898c036c6f67944e8c0c72657475726e5f76616c7565945d94284b014afeffffff4d2c014a701101008a060000000000018a080000000000000080473ff80000000000008c0a68c3a96c6c6f20e29c93944b018c01749486947d948c016b948873658c0e657865637574696f6e5f74696d6594473fd00000000000008c066c6162656c73947d948c016e944b03738c056572726f72944e752e",
        "800595a5000000000000007d94288c0669735f65727294898c036c6f67944e8c0c72657475726e5f76616c7565945d94284b014afeffffff4d2c014a701101008a060000000000018a080000000000000080473ff80000000000008c0a68c3a96c6c6f20e29c93944b018c01749486947d948c016b948873658c0e657865637574696f6e5f74696d6594473fd00000000000008c066c6162656c73947d948c016e944b03738c056572726f72944e752e",
    ];

    #[test]
    fn reads_every_protocol_python_writes() {
        let expected = json!({"is_err": false, "log": null, "return_value": [1, -2, 300, 70000,
            1099511627776i64, i64::MIN, 1.5, "h\u{e9}llo \u{2713}", [1, "t"], {"k": true}],
            "execution_time": 0.25, "labels": {"n": 3}, "error": null});
        for (p, hex) in EVERY_PROTOCOL.iter().enumerate() {
            assert_eq!(loads(&unhex(hex)).unwrap(), expected, "protocol {p}");
        }
    }

    #[test]
    fn round_trips_plain_data() {
        let v = json!({"a": [1, -1, 255, 256, -129, 70000, -2147483649i64, 9223372036854775807i64,
            18446744073709551615u64, 1.5, "é ✓", null, true, false, {}], "b": [], "long": "x".repeat(300)});
        assert_eq!(loads(&dumps(&v)).unwrap(), v);
    }

    #[test]
    fn refuses_classes_and_callables() {
        // pickle.dumps(os.system, 2): a GLOBAL.
        assert_eq!(
            loads(b"\x80\x02cposix\nsystem\nq\x00.").unwrap_err(),
            PickleError::Refused("GLOBAL")
        );
        // Protocol 4 STACK_GLOBAL + REDUCE (what a malicious __reduce__ gives).
        let evil = b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02id\x94\x85\x94R\x94.";
        assert_eq!(
            loads(evil).unwrap_err(),
            PickleError::Refused("STACK_GLOBAL")
        );
        assert!(loads(b"not a pickle").is_err());
        assert!(loads(b"\x80\x04").is_err());
        assert!(loads(b"").is_err());
    }

    #[test]
    fn a_memoized_container_is_seen_filled() {
        // x = [1]; pickle.dumps([x, x], 4) without the frame: the second is a memo GET.
        let p = b"\x80\x04]\x94(]\x94K\x01ah\x01e.";
        assert_eq!(loads(p).unwrap(), json!([[1], [1]]));
        // A list containing itself is refused, not looped on.
        let cyclic = b"\x80\x04]\x94h\x00a.";
        assert!(loads(cyclic).is_err());
        // y = []; then 60 times y = [y, y] (each memoized, popped, fetched twice by the next):
        // 2^60 values once copied out, in 700 bytes. Refused, not expanded.
        let mut p = b"\x80\x04]\x940".to_vec();
        for i in 0..60u32 {
            p.extend_from_slice(b"(j");
            p.extend_from_slice(&i.to_le_bytes());
            p.extend_from_slice(b"j");
            p.extend_from_slice(&i.to_le_bytes());
            p.extend_from_slice(b"l\x940");
        }
        p.extend_from_slice(b"j");
        p.extend_from_slice(&60u32.to_le_bytes());
        p.push(b'.');
        assert!(loads(&p)
            .unwrap_err()
            .to_string()
            .contains("too many values"));
    }
}
