//! Incremental `text/event-stream` parser (WHATWG HTML, "server-sent events").
//!
//! Bytes go in as they arrive from the network; whole events come out. Bounded: a line
//! or an event larger than the limit is an error instead of unbounded growth, because
//! a backend that streams garbage must not take the process's memory with it.

use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `id:` of this event, if it carried one.
    pub id: Option<String>,
    /// `event:` name; `message` when absent.
    pub event: String,
    pub data: String,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum SseError {
    #[error("event stream line or event exceeds {limit} bytes")]
    TooLarge { limit: usize },
    #[error("event stream is not valid UTF-8")]
    InvalidUtf8,
}

#[derive(Debug)]
pub struct SseParser {
    limit: usize,
    line: Vec<u8>,
    /// True when the previous chunk ended on `\r`: a following `\n` belongs to it.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: String,
    id: Option<String>,
    last_event_id: Option<String>,
}

impl SseParser {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            line: Vec::new(),
            after_cr: false,
            data: String::new(),
            has_data: false,
            event: String::new(),
            id: None,
            last_event_id: None,
        }
    }

    /// The last `id:` seen, which a reconnect sends as `Last-Event-ID`.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// Feeds a chunk; returns the events it completed.
    pub fn feed(&mut self, chunk: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut out = Vec::new();
        for &b in chunk {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    if let Some(ev) = self.line_done(&line)? {
                        out.push(ev);
                    }
                }
                _ => {
                    if self.line.len() >= self.limit {
                        return Err(SseError::TooLarge { limit: self.limit });
                    }
                    self.line.push(b);
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &[u8]) -> Result<Option<SseEvent>, SseError> {
        if line.is_empty() {
            return Ok(self.dispatch());
        }
        let line = std::str::from_utf8(line).map_err(|_| SseError::InvalidUtf8)?;
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        if line.starts_with(':') {
            return Ok(None);
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.data.len() + value.len() + 1 > self.limit {
                    return Err(SseError::TooLarge { limit: self.limit });
                }
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = value.to_owned(),
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            _ => {}
        }
        Ok(None)
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        if let Some(id) = self.id.take() {
            self.last_event_id = Some(id);
        }
        let event = std::mem::take(&mut self.event);
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent {
            id: self.last_event_id.clone(),
            event: if event.is_empty() {
                "message".into()
            } else {
                event
            },
            data: std::mem::take(&mut self.data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_split_across_chunks_and_line_endings() {
        let mut p = SseParser::new(1024);
        let mut got = p
            .feed(b": keepalive\r\nid: 7\r\nevent: action.created\r\nda")
            .unwrap();
        assert!(got.is_empty());
        got.extend(p.feed(b"ta: {\"a\":1}\r").unwrap());
        got.extend(
            p.feed(b"\n\r\nid: 8\nevent: x\ndata: a\ndata: b\n\n")
                .unwrap(),
        );
        assert_eq!(
            got,
            vec![
                SseEvent {
                    id: Some("7".into()),
                    event: "action.created".into(),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    id: Some("8".into()),
                    event: "x".into(),
                    data: "a\nb".into()
                },
            ]
        );
        assert_eq!(p.last_event_id(), Some("8"));
    }

    #[test]
    fn event_without_data_only_moves_the_id() {
        let mut p = SseParser::new(64);
        assert!(p.feed(b"id: 3\n\n").unwrap().is_empty());
        assert_eq!(p.last_event_id(), Some("3"));
        let ev = p.feed(b"data: x\n\n").unwrap();
        assert_eq!(ev[0].id.as_deref(), Some("3"));
        assert_eq!(ev[0].event, "message");
    }

    #[test]
    fn oversized_line_and_bad_utf8_are_errors() {
        let mut p = SseParser::new(8);
        assert_eq!(
            p.feed(b"data: 0123456789\n"),
            Err(SseError::TooLarge { limit: 8 })
        );
        let mut p = SseParser::new(64);
        assert_eq!(p.feed(b"data: \xff\xfe\n"), Err(SseError::InvalidUtf8));
    }
}
