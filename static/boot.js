// Starts the page's WebAssembly. A file rather than trunk's inline script, so that the
// Content-Security-Policy can forbid inline scripts.
import init from './app.js';

init({ module_or_path: new URL('./app_bg.wasm', import.meta.url) });
