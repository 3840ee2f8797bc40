//! Expanding `#[task]`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Pat, ReturnType, Type, Visibility};

use crate::options::{err, TaskOptions};

pub fn expand(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let opts = TaskOptions::parse(attr)?;
    let func: ItemFn = syn::parse2(item)?;
    let sig = &func.sig;
    if sig.asyncness.is_none() {
        return Err(err(
            sig.fn_token.span(),
            "#[kiq::task] needs an `async fn`: add `async` before `fn`",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(err(
            sig.generics.span(),
            "#[kiq::task] functions cannot be generic: a worker must know the concrete argument types",
        ));
    }
    if let Some(v) = &sig.variadic {
        return Err(err(v.span(), "#[kiq::task] functions cannot be variadic"));
    }

    let krate = &opts.krate;
    let fn_name = &sig.ident;
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    // What the handler passes to the function, in order: sent arguments and injected state.
    let mut call_args = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(err(
                    r.span(),
                    "#[kiq::task] must be a free function, not a method taking `self`",
                ))
            }
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(err(
                        r.span(),
                        "task arguments travel through Redis, so they must be owned: use `String` for `&str`, `Vec<T>` for `&[T]`",
                    ));
                }
                let name = match &*pt.pat {
                    Pat::Ident(pi) => pi.ident.clone(),
                    _ => format_ident!("__kiq_arg{}", i),
                };
                if let Some(inner) = state_type(&pt.ty) {
                    // Injected from the worker's provided values; not sent.
                    call_args.push(
                        quote!(#krate::__private::injected::<#inner>(SPEC.name, &__kiq_inv)?),
                    );
                    continue;
                }
                call_args.push(quote!(#name));
                arg_names.push(name);
                arg_types.push((*pt.ty).clone());
            }
        }
    }

    // `T` or `Result<T, E>` (recognised by its last path segment being `Result`).
    let (ret_ty, returns_result) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => ((**ty).clone(), is_result(ty)),
    };
    let outcome_ty: Type = if returns_result {
        ret_ty.clone()
    } else {
        syn::parse_quote!(#krate::__private::Plain<#ret_ty>)
    };
    let wrap_call = if returns_result {
        quote!(__kiq_fn(#(#call_args),*).await)
    } else {
        quote!(#krate::__private::Plain(__kiq_fn(#(#call_args),*).await))
    };

    let mod_vis = match &func.vis {
        Visibility::Inherited => quote!(pub(super)),
        Visibility::Public(_) => quote!(pub),
        _ => quote!(pub(crate)),
    };
    let outer_vis = &func.vis;
    let name = match &opts.name {
        Some(n) => quote!(#n),
        // Inside the generated module, module_path!() already ends with the function's name.
        None => quote!(::core::module_path!()),
    };
    let queue = match &opts.queue {
        Some(q) => quote!(#q),
        None => quote!("default"),
    };
    let timeout = match opts.timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(::core::time::Duration::from_millis(#ms))),
        None => quote!(::core::option::Option::None),
    };
    let visibility = match opts.visibility_timeout_ms {
        Some(ms) => quote!(::core::option::Option::Some(::core::time::Duration::from_millis(#ms))),
        None => quote!(::core::option::Option::None),
    };
    let schedule = match &opts.schedule {
        Some(expr) => {
            let tz = match &opts.schedule_tz {
                Some(tz) => quote!(::core::option::Option::Some(#tz)),
                None => quote!(::core::option::Option::None),
            };
            let args = opts
                .schedule_args
                .as_ref()
                .map(|a| quote!(#a))
                .unwrap_or_else(|| quote!("[]"));
            quote!(::core::option::Option::Some(#krate::__private::DeclaredSchedule {
                expr: #expr,
                tz: #tz,
                args_json: #args,
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let retries = opts.retries.unwrap_or(0);
    let backoff = match opts.backoff.as_deref() {
        Some("linear") => quote!(#krate::Backoff::Linear),
        Some("fixed") => quote!(#krate::Backoff::Fixed),
        _ => quote!(#krate::Backoff::Exponential),
    };
    let delay_ms = opts.backoff_delay_ms.unwrap_or(1_000);
    let max_delay_ms = opts.backoff_max_ms.unwrap_or(300_000);
    let jitter = opts.jitter.unwrap_or(true);
    let retry = quote! {
        #krate::RetryPolicy {
            max_retries: #retries,
            backoff: #backoff,
            delay_ms: #delay_ms,
            max_delay_ms: #max_delay_ms,
            jitter: #jitter,
        }
    };
    let decode_args = if arg_names.is_empty() {
        quote!(#krate::__private::expect_no_args(SPEC.name, &__kiq_inv)?;)
    } else {
        quote! {
            let (#(#arg_names,)*): Args =
                #krate::__private::decode_args(SPEC.name, &__kiq_inv)?;
        }
    };
    // Parameter names, for callers that bind arguments by name (Taskiq's kwargs).
    let param_names: Vec<String> = arg_names
        .iter()
        .map(|n| n.to_string().trim_start_matches("r#").to_string())
        .collect();
    let arg_checks = arg_types.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            const _: () = #krate::__private::assert_task_value::<#ty>();
        }
    });
    let output_check = quote_spanned! {ret_ty.span()=>
        const _: fn() = || {
            fn outcome<O: #krate::__private::IntoOutcome>() {}
            outcome::<#outcome_ty>();
        };
    };
    let doc_mod = format!(
        "Dispatch and registration of the [`{fn_name}`](fn@super::{fn_name}) task (generated by `#[kiq::task]`)."
    );

    // A task of one argument can be a later step of a chain (it gets the previous output).
    let link_fn = if arg_types.len() == 1 {
        let only = &arg_types[0];
        quote! {
            /// The task as a later step of a chain, or a group's callback: its argument is the
            /// previous step's output (for a callback, every member's, in order).
            #mod_vis fn link() -> #krate::Link<#only, Output> {
                kicker().link()
            }
        }
    } else {
        quote! {}
    };

    Ok(quote! {
        #func

        #[doc = #doc_mod]
        #[allow(non_snake_case, clippy::module_name_repetitions)]
        #outer_vis mod #fn_name {
            #[allow(unused_imports)]
            use super::*;

            #(#arg_checks)*
            #output_check

            /// The task's name and default queue.
            #mod_vis const SPEC: #krate::TaskSpec = #krate::TaskSpec { name: #name, queue: #queue, retry: #retry };

            /// The task's arguments, as one tuple.
            #mod_vis type Args = (#(#arg_types,)*);

            /// What `wait_result` returns on success.
            #mod_vis type Output = <#outcome_ty as #krate::__private::IntoOutcome>::Output;

            /// Per-call options (queue, task id, labels), then `.kiq(&broker, args)`.
            #mod_vis fn kicker() -> #krate::Kicker<Args, Output> {
                #krate::Kicker::new(SPEC)
            }

            /// Enqueues the task; resolves to a handle once Redis has accepted it.
            #mod_vis async fn kiq(
                broker: &#krate::Broker,
                #(#arg_names: #arg_types),*
            ) -> ::core::result::Result<#krate::TaskHandle<Output>, #krate::DispatchError> {
                kicker().kiq(broker, (#(#arg_names,)*)).await
            }

            /// The task with these arguments, not sent yet: the first step of a chain
            /// (`.then(...)`) or a member of a group (`kiq::group([...])`).
            #mod_vis fn call(#(#arg_names: #arg_types),*) -> #krate::Call<Output> {
                kicker().with_args((#(#arg_names,)*))
            }

            #link_fn

            /// Enqueues one task per argument tuple, pipelined.
            #mod_vis async fn kiq_many(
                broker: &#krate::Broker,
                args: impl ::core::iter::IntoIterator<Item = Args>,
            ) -> ::core::result::Result<::std::vec::Vec<#krate::TaskHandle<Output>>, #krate::DispatchError> {
                kicker().kiq_many(broker, args).await
            }

        }

        // The handler and its registration sit beside the function, not in the module: from
        // there the function is in scope wherever it is declared, inside a function body too
        // (where the module's `super::` would not reach it).
        const _: () = {
            const SPEC: #krate::TaskSpec = #fn_name::SPEC;
            type Args = #fn_name::Args;

            fn __kiq_handler(__kiq_inv: #krate::__private::Invocation) -> #krate::__private::HandlerFuture {
                // Named before the arguments are bound: an argument may share the function's name.
                let __kiq_fn = #fn_name;
                ::std::boxed::Box::pin(async move {
                    #decode_args
                    let __kiq_out = #krate::__private::IntoOutcome::into_outcome(#wrap_call)?;
                    #krate::__private::encode_output(&__kiq_inv, &__kiq_out)
                })
            }

            #krate::__private::inventory::submit! {
                #krate::__private::TaskDef {
                    name: SPEC.name,
                    queue: SPEC.queue,
                    timeout: #timeout,
                    retry: SPEC.retry,
                    visibility_timeout: #visibility,
                    schedule: #schedule,
                    handler: __kiq_handler,
                    params: &[#(#param_names),*],
                    location: ::core::concat!(::core::file!(), ":", ::core::line!()),
                }
            }
        };
    })
}

/// `T` of an argument typed `State<T>` (any path ending in `State` with one type argument).
fn state_type(ty: &Type) -> Option<Type> {
    let Type::Path(tp) = ty else { return None };
    let last = tp.path.segments.last()?;
    if last.ident != "State" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match a.args.first()? {
            syn::GenericArgument::Type(t) => Some(t.clone()),
            _ => None,
        },
        _ => None,
    }
}

fn is_result(ty: &Type) -> bool {
    match ty {
        Type::Path(tp) => tp
            .path
            .segments
            .last()
            .map(|s| s.ident == "Result")
            .unwrap_or(false),
        _ => false,
    }
}
