//! JSON that the API's bodies and the WebSocket's frames must be: objects.
//! serde reads a struct from a JSON array too (`["ping"]`), so both check
//! the shape before parsing, and refuse anything else the same way.

/// The refusal of a request body that is not a JSON object.
pub const BODY_NOT_AN_OBJECT: &str = "the body must be a JSON object";

/// Does this JSON text open with an object (after JSON whitespace)?
pub fn opens_object(text: &[u8]) -> bool {
    text.iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'))
        .is_some_and(|&byte| byte == b'{')
}

/// A request body as the API reads it: an empty or blank body is `{}`.
pub fn body_or_empty_object(body: &[u8]) -> &[u8] {
    if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_objects_open_as_objects() {
        assert!(opens_object(b" \n{\"a\":1}"));
        for other in [&b"[1]"[..], b"\"s\"", b"", b"  ", b"\x0c{}"] {
            assert!(!opens_object(other), "{other:?}");
        }
        assert_eq!(body_or_empty_object(b" \t"), b"{}");
        assert_eq!(body_or_empty_object(b"[]"), b"[]");
    }
}
