//! Parsing `#[task(...)]` options.

use proc_macro2::{Span, TokenStream};
use syn::{meta::ParseNestedMeta, LitInt, LitStr, Path};

/// The options of one `#[task]`.
pub struct TaskOptions {
    pub name: Option<LitStr>,
    pub queue: Option<LitStr>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub backoff: Option<String>,
    pub backoff_delay_ms: Option<u64>,
    pub backoff_max_ms: Option<u64>,
    pub jitter: Option<bool>,
    pub visibility_timeout_ms: Option<u64>,
    pub schedule: Option<LitStr>,
    pub schedule_tz: Option<LitStr>,
    pub schedule_args: Option<LitStr>,
    pub krate: Path,
}

impl TaskOptions {
    pub fn parse(attr: TokenStream) -> syn::Result<Self> {
        let mut o = TaskOptions {
            name: None,
            queue: None,
            timeout_ms: None,
            retries: None,
            backoff: None,
            backoff_delay_ms: None,
            backoff_max_ms: None,
            jitter: None,
            visibility_timeout_ms: None,
            schedule: None,
            schedule_tz: None,
            schedule_args: None,
            krate: syn::parse_quote!(::kiq),
        };
        let parser = syn::meta::parser(|meta| o.parse_one(meta));
        syn::parse::Parser::parse2(parser, attr)?;
        Ok(o)
    }

    fn parse_one(&mut self, meta: ParseNestedMeta) -> syn::Result<()> {
        if meta.path.is_ident("name") {
            let s: LitStr = meta.value()?.parse()?;
            if s.value().trim().is_empty() {
                return Err(syn::Error::new(s.span(), "task name must not be empty"));
            }
            self.name = Some(s);
        } else if meta.path.is_ident("queue") {
            let s: LitStr = meta.value()?.parse()?;
            let v = s.value();
            let ok = !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !ok {
                return Err(syn::Error::new(
                    s.span(),
                    "queue names are 1-64 characters of A-Z a-z 0-9 - _ .",
                ));
            }
            self.queue = Some(s);
        } else if meta.path.is_ident("timeout") {
            self.timeout_ms = Some(duration_ms(&meta, "timeout")?);
        } else if meta.path.is_ident("backoff") {
            let s: LitStr = meta.value()?.parse()?;
            let v = s.value();
            if !matches!(v.as_str(), "exponential" | "linear" | "fixed") {
                return Err(syn::Error::new(
                    s.span(),
                    "backoff must be \"exponential\", \"linear\" or \"fixed\"",
                ));
            }
            self.backoff = Some(v);
        } else if meta.path.is_ident("schedule") {
            let s: LitStr = meta.value()?.parse()?;
            if s.value().trim().is_empty() {
                return Err(syn::Error::new(s.span(), "schedule must not be empty"));
            }
            self.schedule = Some(s);
        } else if meta.path.is_ident("schedule_tz") {
            self.schedule_tz = Some(meta.value()?.parse()?);
        } else if meta.path.is_ident("schedule_args") {
            let s: LitStr = meta.value()?.parse()?;
            let v = s.value();
            let t = v.trim();
            if !(t.starts_with('[') && t.ends_with(']')) {
                return Err(syn::Error::new(
                    s.span(),
                    "schedule_args must be a JSON array of the task's arguments, e.g. \"[1, \\\"x\\\"]\"",
                ));
            }
            self.schedule_args = Some(s);
        } else if meta.path.is_ident("visibility_timeout") {
            self.visibility_timeout_ms = Some(duration_ms(&meta, "visibility_timeout")?);
        } else if meta.path.is_ident("backoff_delay") {
            self.backoff_delay_ms = Some(duration_ms(&meta, "backoff_delay")?);
        } else if meta.path.is_ident("backoff_max") {
            self.backoff_max_ms = Some(duration_ms(&meta, "backoff_max")?);
        } else if meta.path.is_ident("jitter") {
            let b: syn::LitBool = meta.value()?.parse()?;
            self.jitter = Some(b.value);
        } else if meta.path.is_ident("retries") {
            let n: LitInt = meta.value()?.parse()?;
            self.retries = Some(n.base10_parse()?);
        } else if meta.path.is_ident("crate") {
            let s: LitStr = meta.value()?.parse()?;
            self.krate = s.parse()?;
        } else {
            return Err(meta.error(
                "unknown #[task] option; expected one of: name, queue, timeout, retries, backoff, backoff_delay, backoff_max, jitter, visibility_timeout, schedule, schedule_tz, schedule_args, crate",
            ));
        }
        Ok(())
    }
}

/// Parses `option = "30s"` into milliseconds (greater than zero).
fn duration_ms(meta: &ParseNestedMeta, what: &str) -> syn::Result<u64> {
    let s: LitStr = meta.value()?.parse()?;
    let d = humantime::parse_duration(&s.value()).map_err(|e| {
        syn::Error::new(
            s.span(),
            format!("{what} must be a duration like \"30s\", \"500ms\", \"5m\": {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(syn::Error::new(
            s.span(),
            format!("{what} must be greater than zero"),
        ));
    }
    Ok(d.as_millis().min(u64::MAX as u128) as u64)
}

/// An error at `span`.
pub fn err(span: Span, msg: &str) -> syn::Error {
    syn::Error::new(span, msg)
}
