//! Plain text out of an uploaded document: UTF-8 text as is, PDF through `lopdf`.
//!
//! The PDF path is bounded: at most [`MAX_PDF_PAGES`] pages, each page's decompressed content at most
//! [`MAX_PAGE_CONTENT_BYTES`] (a small compressed stream cannot inflate without limit), and at most
//! [`MAX_TEXT_CHARS`] characters of text kept. It is CPU work: call it from `spawn_blocking`.

/// Pages read from a PDF; the rest are ignored.
pub const MAX_PDF_PAGES: usize = 2000;
/// Largest decompressed content stream of one page.
pub const MAX_PAGE_CONTENT_BYTES: usize = 32 * 1024 * 1024;
/// Characters of extracted text kept per document.
pub const MAX_TEXT_CHARS: usize = 4 * 1024 * 1024;

/// The document kinds accepted for retrieval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// `text/plain` (also `text/markdown`, `text/csv`), UTF-8.
    Text,
    /// `application/pdf`.
    Pdf,
}

impl DocumentKind {
    /// The media type stored with the document.
    pub fn mime(self) -> &'static str {
        match self {
            DocumentKind::Text => "text/plain",
            DocumentKind::Pdf => "application/pdf",
        }
    }

    /// Reads a `Content-Type` value (parameters such as `charset` are ignored; a charset other than
    /// UTF-8 or ASCII is refused). `None` for anything unsupported.
    pub fn from_content_type(value: &str) -> Option<DocumentKind> {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let charset_ok = parts.all(|param| {
            let param = param.trim().to_ascii_lowercase();
            match param.strip_prefix("charset=") {
                Some(charset) => matches!(
                    charset.trim_matches('"'),
                    "utf-8" | "utf8" | "us-ascii" | "ascii"
                ),
                None => true,
            }
        });
        match essence.as_str() {
            "text/plain" | "text/markdown" | "text/csv" if charset_ok => Some(DocumentKind::Text),
            "application/pdf" => Some(DocumentKind::Pdf),
            _ => None,
        }
    }

    /// Guesses from a file name's extension (for multipart parts sent as `application/octet-stream`).
    pub fn from_file_name(name: &str) -> Option<DocumentKind> {
        let extension = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match extension.as_str() {
            "txt" | "md" | "markdown" | "csv" | "text" => Some(DocumentKind::Text),
            "pdf" => Some(DocumentKind::Pdf),
            _ => None,
        }
    }
}

/// Why no text could be taken from an upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExtractError {
    /// The bytes are not valid UTF-8.
    #[error("the file is not valid UTF-8 text")]
    NotUtf8,
    /// The bytes do not start like a PDF, or `lopdf` cannot parse them.
    #[error("the file is not a readable PDF: {0}")]
    BadPdf(String),
    /// The PDF is encrypted.
    #[error("encrypted PDF files are not supported")]
    Encrypted,
    /// The document holds no text (an empty file, or a PDF of scanned images).
    #[error("no text could be extracted from the file")]
    Empty,
}

/// Extracts the plain text of `bytes` of `kind`.
///
/// # Errors
/// See [`ExtractError`].
pub fn extract_text(kind: DocumentKind, bytes: &[u8]) -> Result<String, ExtractError> {
    let text = match kind {
        DocumentKind::Text => {
            let text = std::str::from_utf8(bytes).map_err(|_| ExtractError::NotUtf8)?;
            text.strip_prefix('\u{feff}').unwrap_or(text).to_owned()
        }
        DocumentKind::Pdf => extract_pdf(bytes)?,
    };
    let text = truncate_chars(text, MAX_TEXT_CHARS);
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(text)
}

fn extract_pdf(bytes: &[u8]) -> Result<String, ExtractError> {
    // Refuse non-PDF bytes before the parser sees them; PDF allows up to 1 KiB of junk before the header.
    let head = &bytes[..bytes.len().min(1024)];
    if !head.windows(5).any(|w| w == b"%PDF-") {
        return Err(ExtractError::BadPdf("missing %PDF- header".into()));
    }
    let document = lopdf::Document::load_mem(bytes)
        .map_err(|error| ExtractError::BadPdf(error.to_string()))?;
    if document.is_encrypted() {
        return Err(ExtractError::Encrypted);
    }
    let pages: Vec<u32> = document
        .get_pages()
        .keys()
        .copied()
        .take(MAX_PDF_PAGES)
        .collect();
    let mut text = String::new();
    for page in pages {
        // One unreadable page (an unknown font encoding) does not lose the others.
        match document.extract_text_with_limit(&[page], MAX_PAGE_CONTENT_BYTES) {
            Ok(page_text) => {
                text.push_str(page_text.trim_end());
                text.push('\n');
            }
            Err(error) => tracing::debug!(page, %error, "PDF page without extractable text"),
        }
        if text.len() > MAX_TEXT_CHARS * 4 {
            break;
        }
    }
    Ok(text)
}

fn truncate_chars(mut text: String, max: usize) -> String {
    if let Some((at, _)) = text.char_indices().nth(max) {
        text.truncate(at);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        assert_eq!(
            DocumentKind::from_content_type("text/plain; charset=utf-8"),
            Some(DocumentKind::Text)
        );
        assert_eq!(
            DocumentKind::from_content_type("Application/PDF"),
            Some(DocumentKind::Pdf)
        );
        assert_eq!(
            DocumentKind::from_content_type("text/plain; charset=latin1"),
            None
        );
        assert_eq!(DocumentKind::from_content_type("image/png"), None);
        assert_eq!(
            DocumentKind::from_file_name("Notes.PDF"),
            Some(DocumentKind::Pdf)
        );
        assert_eq!(DocumentKind::from_file_name("notes"), None);
    }

    #[test]
    fn text_and_pdf_extraction() {
        assert_eq!(
            extract_text(DocumentKind::Text, "\u{feff}bonjour".as_bytes()).unwrap(),
            "bonjour"
        );
        assert_eq!(
            extract_text(DocumentKind::Text, &[0xff, 0xfe, 0x00]),
            Err(ExtractError::NotUtf8)
        );
        assert_eq!(
            extract_text(DocumentKind::Text, b"  \n"),
            Err(ExtractError::Empty)
        );
        let pdf = crate::testing::one_page_pdf(&["The launch code is (zebra) 42.", "Second line"]);
        let text = extract_text(DocumentKind::Pdf, &pdf).unwrap();
        assert!(text.contains("The launch code is (zebra) 42."), "{text:?}");
        assert!(text.contains("Second line"), "{text:?}");
        assert!(matches!(
            extract_text(DocumentKind::Pdf, b"hello"),
            Err(ExtractError::BadPdf(_))
        ));
        assert!(matches!(
            extract_text(DocumentKind::Pdf, b"%PDF-1.4\ngarbage"),
            Err(ExtractError::BadPdf(_))
        ));
    }
}
