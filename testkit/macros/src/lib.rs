//! `#[testkit::test]`: turns `async fn name(pool: PgPool)` into a `#[test]` that runs it on a
//! database of its own through `testkit::run`. Use it through `testkit`, which re-exports it.
//!
//! The arguments are `#[sqlx::test]`'s that this workspace uses:
//!
//! * none: the migrations in the crate's `./migrations`, if that folder exists when the test
//!   is compiled (none of ours has one; the gateway's are at the workspace root);
//! * `migrations = "<dir>"`: those in `<dir>`, relative to the crate (`sqlx::migrate!`);
//! * `migrations = false`: an empty database (the gateway's own start migrates it).
//!
//! Migrations are embedded with `sqlx::migrate!`, so the test's crate depends on `sqlx` with
//! its `migrate` feature, as it did for `#[sqlx::test]`.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::quote;
use syn::{ItemFn, Lit, LitStr, parse_macro_input};

/// Which migrations the test's database gets.
enum Migrations {
    Default,
    Dir(LitStr),
    None,
}

#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut migrations = Migrations::Default;
    let parser = syn::meta::parser(|meta| {
        if !meta.path.is_ident("migrations") {
            return Err(meta.error("expected `migrations = \"<dir>\"` or `migrations = false`"));
        }
        if !matches!(migrations, Migrations::Default) {
            return Err(meta.error("`migrations` given twice"));
        }
        migrations = match meta.value()?.parse::<Lit>()? {
            Lit::Str(dir) => Migrations::Dir(dir),
            Lit::Bool(b) if !b.value => Migrations::None,
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    "expected a directory or `false` (the default is `./migrations`)",
                ));
            }
        };
        Ok(())
    });
    parse_macro_input!(args with parser);
    let function = parse_macro_input!(item as ItemFn);
    expand(migrations, function)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

fn expand(migrations: Migrations, function: ItemFn) -> syn::Result<TokenStream2> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = function;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new_spanned(
            sig.fn_token,
            "#[testkit::test] takes an `async fn`",
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new_spanned(
            &sig.inputs,
            "#[testkit::test] takes an `async fn` with one parameter, the `PgPool` of its database",
        ));
    }
    let name = &sig.ident;
    let output = &sig.output;
    let migrator = match migrations {
        Migrations::Dir(dir) => quote! { ::core::option::Option::Some(::sqlx::migrate!(#dir)) },
        Migrations::None => quote! { ::core::option::Option::None },
        // As `#[sqlx::test]`: the crate's `./migrations` if there is one, else none. The check
        // runs at compile time; a folder added later takes effect at the next rebuild.
        Migrations::Default => {
            let dir = std::env::var("CARGO_MANIFEST_DIR")
                .map(|crate_dir| std::path::Path::new(&crate_dir).join("migrations"))
                .map_err(|_| {
                    syn::Error::new(
                        proc_macro2::Span::call_site(),
                        "CARGO_MANIFEST_DIR is not set; build with cargo",
                    )
                })?;
            if dir.is_dir() {
                quote! { ::core::option::Option::Some(::sqlx::migrate!()) }
            } else {
                quote! { ::core::option::Option::None }
            }
        }
    };
    Ok(quote! {
        #(#attrs)*
        #[::core::prelude::v1::test]
        #vis fn #name() #output {
            #sig #block

            ::testkit::run(
                ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#name)),
                #migrator,
                #name,
            )
        }
    })
}
