//! `POST /chatbot/{chatbotId}/documents`: a text or PDF document for the chatbot's answers to draw on.
//!
//! The upload is either `multipart/form-data` with the document in the field `file` (and an optional
//! `title` field), or the raw body with `Content-Type: text/plain` or `application/pdf`. The document is
//! stored with the uploading user as owner and the chatbot as scope: the user's later answers from this
//! chatbot retrieve from it; other users' do not.
//!
//! Limits: the document may be at most `chat.max_upload_bytes` (413, field `file`); other media types get 415
//! (field `file`); a file without extractable text gets 422.

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest as _, Multipart, Path, Request, State};
use futures_util::StreamExt as _;
use http::{HeaderMap, StatusCode, header};
use serde::Serialize;

use super::extract::{DocumentKind, ExtractError, extract_text};
use super::{ChatbotError, authenticate, find_chatbot};
use crate::api::timestamp;
use crate::chat::NewDocument;
use crate::state::AppState;

/// Longest accepted title, in characters.
const MAX_TITLE_CHARS: usize = 200;

/// The body of a successful upload (201).
#[derive(Debug, Serialize)]
pub(super) struct DocumentCreated {
    document_id: String,
    chatbot_id: String,
    title: String,
    mime: String,
    size_bytes: i64,
    chunk_count: i64,
    created_at: String,
}

/// An upload read off the request.
struct Upload {
    bytes: Vec<u8>,
    kind: DocumentKind,
    title: String,
}

fn too_large(limit: usize) -> ChatbotError {
    ChatbotError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("File too large: the limit is {limit} bytes"),
        Some("file"),
    )
}

fn unsupported(what: &str) -> ChatbotError {
    ChatbotError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        format!("Unsupported media type {what:?}: upload text/plain (UTF-8) or application/pdf"),
        Some("file"),
    )
}

pub(super) async fn upload(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    request: Request,
) -> Result<(StatusCode, Json<DocumentCreated>), ChatbotError> {
    let Path(chatbot_id) = path.map_err(|r| ChatbotError::path("chatbotId", &r))?;
    let claims = authenticate(&state, &headers)?;
    let chatbot =
        find_chatbot(&state.config, &chatbot_id).ok_or_else(ChatbotError::chatbot_not_found)?;
    let limit = state.config.chat.max_upload_bytes;

    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let upload = if content_type
        .to_ascii_lowercase()
        .starts_with("multipart/form-data")
    {
        read_multipart(&state, request, limit).await?
    } else {
        let kind = DocumentKind::from_content_type(&content_type)
            .ok_or_else(|| unsupported(&content_type))?;
        let bytes = read_body(request, limit).await?;
        let title = disposition_filename(&headers)
            .unwrap_or_else(|| format!("document.{}", extension(kind)));
        Upload { bytes, kind, title }
    };

    let size_bytes = upload.bytes.len() as i64;
    let kind = upload.kind;
    let bytes = upload.bytes;
    let text = tokio::task::spawn_blocking(move || extract_text(kind, &bytes))
        .await
        .map_err(|_| {
            ChatbotError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Text extraction failed",
                None,
            )
        })?
        .map_err(|error| match error {
            ExtractError::BadPdf(_) => ChatbotError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                error.to_string(),
                Some("file"),
            ),
            _ => ChatbotError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                error.to_string(),
                Some("file"),
            ),
        })?;

    let document = state
        .chat
        .store()
        .add_document(&NewDocument {
            owner: claims.sub,
            scope: chatbot.id.clone(),
            title: upload.title,
            mime: kind.mime().to_owned(),
            content: text,
            size_bytes,
            metadata: serde_json::json!({ "surface": super::KIND }),
        })
        .await
        .map_err(|e| ChatbotError::store(&e))?;
    tracing::info!(document_id = %document.id, chatbot = %chatbot.id, size_bytes, "document added");
    Ok((
        StatusCode::CREATED,
        Json(DocumentCreated {
            document_id: document.id,
            chatbot_id: chatbot.id.clone(),
            title: document.title,
            mime: document.mime,
            size_bytes: document.size_bytes,
            chunk_count: document.chunk_count,
            created_at: timestamp(document.created_at),
        }),
    ))
}

fn extension(kind: DocumentKind) -> &'static str {
    match kind {
        DocumentKind::Text => "txt",
        DocumentKind::Pdf => "pdf",
    }
}

/// Reads a raw body of at most `limit` bytes.
async fn read_body(request: Request, limit: usize) -> Result<Vec<u8>, ChatbotError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    let mut stream = request.into_body().into_data_stream();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            ChatbotError::new(
                StatusCode::BAD_REQUEST,
                "Cannot read the request body",
                Some("file"),
            )
        })?;
        if bytes.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

/// Reads the `file` (and optional `title`) fields of a multipart upload.
async fn read_multipart(
    state: &AppState,
    request: Request,
    limit: usize,
) -> Result<Upload, ChatbotError> {
    let bad = |detail: String| ChatbotError::new(StatusCode::BAD_REQUEST, detail, Some("file"));
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|error| bad(format!("Invalid multipart body: {error}")))?;
    let mut file: Option<(Vec<u8>, DocumentKind, Option<String>)> = None;
    let mut title: Option<String> = None;
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|error| bad(format!("Invalid multipart body: {error}")))?
    {
        match field.name() {
            Some("file") if file.is_none() => {
                let file_name = field.file_name().map(str::to_owned);
                let declared = field.content_type().map(str::to_owned);
                let kind = declared
                    .as_deref()
                    .filter(|value| *value != "application/octet-stream")
                    .map(|value| {
                        DocumentKind::from_content_type(value).ok_or_else(|| unsupported(value))
                    })
                    .or_else(|| {
                        file_name
                            .as_deref()
                            .and_then(DocumentKind::from_file_name)
                            .map(Ok)
                    })
                    .unwrap_or_else(|| {
                        Err(unsupported(declared.as_deref().unwrap_or("unknown")))
                    })?;
                let mut bytes = Vec::new();
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|error| bad(format!("Invalid multipart body: {error}")))?
                {
                    if bytes.len() + chunk.len() > limit {
                        return Err(too_large(limit));
                    }
                    bytes.extend_from_slice(&chunk);
                }
                file = Some((bytes, kind, file_name));
            }
            Some("title") => {
                let text = field
                    .text()
                    .await
                    .map_err(|error| bad(format!("Invalid title field: {error}")))?;
                if text.chars().count() > MAX_TITLE_CHARS {
                    return Err(ChatbotError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("Title too long: at most {MAX_TITLE_CHARS} characters"),
                        Some("title"),
                    ));
                }
                title = Some(text.trim().to_owned()).filter(|t| !t.is_empty());
            }
            // Unknown fields are drained and ignored, within the same size bound.
            _ => {
                let mut seen = 0usize;
                while let Some(chunk) = field
                    .chunk()
                    .await
                    .map_err(|error| bad(format!("Invalid multipart body: {error}")))?
                {
                    seen += chunk.len();
                    if seen > limit {
                        return Err(too_large(limit));
                    }
                }
            }
        }
    }
    let (bytes, kind, file_name) = file.ok_or_else(|| {
        ChatbotError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Missing multipart field 'file'",
            Some("file"),
        )
    })?;
    let title = title
        .or(file_name)
        .unwrap_or_else(|| format!("document.{}", extension(kind)));
    Ok(Upload {
        bytes,
        kind,
        title: truncate(&title),
    })
}

fn truncate(title: &str) -> String {
    title.chars().take(MAX_TITLE_CHARS).collect()
}

/// The `filename` of a `Content-Disposition` header, for raw-body uploads.
fn disposition_filename(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_DISPOSITION)?.to_str().ok()?;
    value.split(';').find_map(|part| {
        let (key, name) = part.trim().split_once('=')?;
        (key.trim().eq_ignore_ascii_case("filename"))
            .then(|| truncate(name.trim().trim_matches('"')))
    })
}
