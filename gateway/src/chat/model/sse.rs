//! A sans-IO parser of `text/event-stream` (the WHATWG server-sent events format).
//!
//! Bytes go in as they arrive, in any split; complete events come out. Lines end with LF, CRLF or a lone CR
//! (a CR at the very end of the input is held back until the next byte tells whether an LF follows). Lines
//! starting with `:` are comments (keep-alives). `data:` lines of one event are joined with `\n`. A blank line
//! dispatches the event; an event with no `data` line is dropped, as the standard says.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, when present.
    pub event: Option<String>,
    pub data: String,
}

#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not yet terminated.
    line: Vec<u8>,
    /// Whether the previous byte was a CR, so that a following LF belongs to the same line break.
    after_cr: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds bytes; appends every event they complete to `out`.
    pub fn push(&mut self, bytes: &[u8], out: &mut Vec<SseEvent>) {
        for &b in bytes {
            match b {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' | b'\r' => {
                    self.after_cr = b == b'\r';
                    let line = std::mem::take(&mut self.line);
                    self.line(&line, out);
                }
                _ => {
                    self.after_cr = false;
                    self.line.push(b);
                }
            }
        }
    }

    /// The input ended: an unterminated last line is processed and a pending event is dispatched (servers
    /// that close right after their last `data:` line are common enough to be forgiven).
    pub fn finish(&mut self, out: &mut Vec<SseEvent>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line(&line, out);
        }
        self.dispatch(out);
    }

    fn line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let line = String::from_utf8_lossy(line);
        let (field, value) = match line.find(':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(' ').unwrap_or(value))
            }
            None => (line.as_ref(), ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = Some(value.to_owned()),
            // `id` and `retry` only matter to reconnecting browsers.
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        let event = self.event.take();
        if self.has_data {
            self.has_data = false;
            out.push(SseEvent {
                event,
                data: std::mem::take(&mut self.data),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_in_pieces(input: &[u8], piece: usize) -> Vec<SseEvent> {
        let mut parser = SseParser::new();
        let mut out = Vec::new();
        for chunk in input.chunks(piece) {
            parser.push(chunk, &mut out);
        }
        parser.finish(&mut out);
        out
    }

    fn data(events: &[SseEvent]) -> Vec<&str> {
        events.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let input = b": keep-alive\r\n\r\ndata: {\"a\":1}\r\n\r\nevent: x\ndata: line1\ndata: line2\n\ndata:nospace\r\rdata: [DONE]\n\n";
        for piece in 1..input.len() {
            let events = parse_in_pieces(input, piece);
            assert_eq!(
                data(&events),
                ["{\"a\":1}", "line1\nline2", "nospace", "[DONE]"],
                "piece {piece}"
            );
            assert_eq!(events[1].event.as_deref(), Some("x"));
        }
    }

    #[test]
    fn comments_and_fieldless_events_are_skipped() {
        let events = parse_in_pieces(b":ping\n\nid: 3\n\nretry: 10\n\n", 4);
        assert!(events.is_empty());
    }

    #[test]
    fn a_last_event_without_blank_line_is_dispatched_at_the_end() {
        assert_eq!(data(&parse_in_pieces(b"data: tail", 3)), ["tail"]);
    }

    #[test]
    fn multibyte_characters_split_across_pushes_survive() {
        let input = "data: élan ✓\n\n".as_bytes();
        assert_eq!(data(&parse_in_pieces(input, 1)), ["élan ✓"]);
    }
}
