//! Server-sent events as OpenAI-compatible engines stream them: bytes in,
//! `data:` payloads out, whatever the chunking. Bounded: an event larger
//! than the cap is an error, never an ever-growing buffer.

/// Splits a byte stream into SSE events and yields each event's data.
pub struct SseParser {
    buf: Vec<u8>,
    max_event: usize,
}

/// The stream broke the SSE format or its size bound.
#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    /// One event exceeded `max_event` bytes.
    TooLarge(usize),
    /// An event's data is not UTF-8.
    NotUtf8,
}

impl SseParser {
    /// A parser refusing events larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            buf: Vec::new(),
            max_event,
        }
    }

    /// Feeds `bytes`; returns the data of every event they completed, in
    /// order. Comment lines (`:`) and fields other than `data` are skipped;
    /// an event with several `data:` lines joins them with `\n`, as the
    /// SSE spec says. Events without data are dropped.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, SseError> {
        self.buf.extend_from_slice(bytes);
        let mut out = Vec::new();
        while let Some((end, sep)) = event_end(&self.buf) {
            let raw: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            if let Some(data) = event_data(&raw)? {
                out.push(data);
            }
        }
        if self.buf.len() > self.max_event {
            return Err(SseError::TooLarge(self.max_event));
        }
        Ok(out)
    }

    /// The data of a last event the stream ended without a blank line after.
    pub fn finish(&mut self) -> Result<Option<String>, SseError> {
        let raw = std::mem::take(&mut self.buf);
        event_data(&raw)
    }
}

/// Where the first complete event ends in `buf`, and the length of the
/// blank-line separator after it (`\n\n`, `\r\n\r\n` or `\r\r`).
fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        for sep in [&b"\r\n\r\n"[..], b"\n\n", b"\r\r"] {
            if buf[i..].starts_with(sep) {
                return Some((i, sep.len()));
            }
        }
    }
    None
}

fn event_data(raw: &[u8]) -> Result<Option<String>, SseError> {
    let text = std::str::from_utf8(raw).map_err(|_| SseError::NotUtf8)?;
    let mut data: Option<String> = None;
    for line in text.split(['\n', '\r']) {
        let value = match line.strip_prefix("data") {
            Some("") => "",
            Some(rest) => match rest.strip_prefix(':') {
                Some(v) => v.strip_prefix(' ').unwrap_or(v),
                None => continue, // a field named e.g. `database`
            },
            None => continue,
        };
        match &mut data {
            Some(d) => {
                d.push('\n');
                d.push_str(value);
            }
            None => data = Some(value.to_string()),
        }
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_come_out_whatever_the_chunking() {
        let stream = b": keep-alive\n\ndata: {\"a\":1}\n\ndata: two\r\ndata: lines\r\n\r\nevent: x\ndata: [DONE]\n\n";
        let whole = SseParser::new(1024).push(stream).unwrap();
        assert_eq!(whole, vec!["{\"a\":1}", "two\nlines", "[DONE]"]);
        for step in 1..stream.len() {
            let mut p = SseParser::new(1024);
            let mut got = Vec::new();
            for chunk in stream.chunks(step) {
                got.extend(p.push(chunk).unwrap());
            }
            assert_eq!(got, whole, "chunks of {step}");
        }
    }

    #[test]
    fn an_unterminated_last_event_is_kept_and_an_oversized_one_refused() {
        let mut p = SseParser::new(1024);
        assert!(p.push(b"data: tail").unwrap().is_empty());
        assert_eq!(p.finish().unwrap().as_deref(), Some("tail"));
        let mut p = SseParser::new(8);
        assert_eq!(p.push(b"data: 0123456789"), Err(SseError::TooLarge(8)));
        let mut p = SseParser::new(64);
        assert_eq!(p.push(b"data: \xff\n\n"), Err(SseError::NotUtf8));
        // `database:` is not `data:`
        assert!(SseParser::new(64)
            .push(b"database: x\n\n")
            .unwrap()
            .is_empty());
    }
}
