//! The browser side (wasm32 only): the page ([`ui`]), the inference worker ([`worker`])
//! and what they share: how messages cross between them.

pub mod ui;
pub mod worker;

use crate::WebError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use wasm_bindgen::{JsCast, JsValue};

/// A readable one-line description of a JavaScript exception or value.
pub fn describe_js(value: &JsValue) -> String {
    if let Some(error) = value.dyn_ref::<js_sys::Error>() {
        let name = String::from(error.name());
        let message = String::from(error.message());
        return if name.is_empty() || name == "Error" {
            message
        } else {
            format!("{name}: {message}")
        };
    }
    value.as_string().unwrap_or_else(|| format!("{value:?}"))
}

/// Packs a message (JSON) and optional bytes into the `[json, bytes]` array that
/// crosses `postMessage`, and the list of buffers to transfer rather than copy.
pub fn pack<T: Serialize>(
    message: &T,
    bytes: Option<&[u8]>,
) -> Result<(js_sys::Array, js_sys::Array), WebError> {
    let json = serde_json::to_string(message)
        .map_err(|e| WebError::Browser(format!("encoding a message: {e}")))?;
    let packed = js_sys::Array::new();
    packed.push(&JsValue::from_str(&json));
    let transfer = js_sys::Array::new();
    if let Some(bytes) = bytes {
        let array = js_sys::Uint8Array::from(bytes);
        transfer.push(&array.buffer());
        packed.push(&array);
    }
    Ok((packed, transfer))
}

/// Unpacks what [`pack`] made.
pub fn unpack<T: DeserializeOwned>(data: &JsValue) -> Result<(T, Option<Vec<u8>>), WebError> {
    let packed = data
        .dyn_ref::<js_sys::Array>()
        .ok_or_else(|| WebError::Browser("a message that is not [json, bytes]".into()))?;
    let json = packed
        .get(0)
        .as_string()
        .ok_or_else(|| WebError::Browser("a message without its JSON part".into()))?;
    let message = serde_json::from_str(&json)
        .map_err(|e| WebError::Browser(format!("decoding a message: {e}")))?;
    let bytes = packed
        .get(1)
        .dyn_ref::<js_sys::Uint8Array>()
        .map(js_sys::Uint8Array::to_vec);
    Ok((message, bytes))
}
