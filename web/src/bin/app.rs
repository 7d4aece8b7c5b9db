//! The page's program (trunk builds it from `static/index.html`).

#[cfg(target_arch = "wasm32")]
fn main() {
    if let Err(e) = web::browser::ui::run() {
        web::browser::ui::fatal(&e);
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!("`app` is the web page's program: build it with `trunk build` (see README.md)");
}
