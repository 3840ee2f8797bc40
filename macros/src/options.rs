//! Parsing `#[task(...)]` options.

use proc_macro2::{Span, TokenStream};
use syn::{meta::ParseNestedMeta, LitInt, LitStr, Path};

/// The options of one `#[task]`.
pub struct TaskOptions {
    pub name: Option<LitStr>,
    pub queue: Option<LitStr>,
    pub timeout_ms: Option<u64>,
    pub retries: Option<u32>,
    pub krate: Path,
}

impl TaskOptions {
    pub fn parse(attr: TokenStream) -> syn::Result<Self> {
        let mut o = TaskOptions {
            name: None,
            queue: None,
            timeout_ms: None,
            retries: None,
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
            let s: LitStr = meta.value()?.parse()?;
            let d = humantime::parse_duration(&s.value()).map_err(|e| {
                syn::Error::new(
                    s.span(),
                    format!("timeout must be a duration like \"30s\", \"500ms\", \"5m\": {e}"),
                )
            })?;
            if d.is_zero() {
                return Err(syn::Error::new(
                    s.span(),
                    "timeout must be greater than zero",
                ));
            }
            self.timeout_ms = Some(d.as_millis().min(u64::MAX as u128) as u64);
        } else if meta.path.is_ident("retries") {
            let n: LitInt = meta.value()?.parse()?;
            self.retries = Some(n.base10_parse()?);
        } else if meta.path.is_ident("crate") {
            let s: LitStr = meta.value()?.parse()?;
            self.krate = s.parse()?;
        } else {
            return Err(meta.error(
                "unknown #[task] option; expected one of: name, queue, timeout, retries, crate",
            ));
        }
        Ok(())
    }
}

/// An error at `span`.
pub fn err(span: Span, msg: &str) -> syn::Error {
    syn::Error::new(span, msg)
}
