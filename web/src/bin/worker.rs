//! The inference worker's program (trunk builds it from `static/index.html`; the page
//! starts it).

#[cfg(target_arch = "wasm32")]
fn main() {
    if let Err(e) = web::browser::worker::run() {
        // The page sees the worker's `error` event; the console says why.
        wasm_bindgen::throw_str(&format!("the worker could not start: {e}"));
    }
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {
    eprintln!(
        "`worker` is the web page's inference worker: build it with `trunk build` (see README.md)"
    );
}
