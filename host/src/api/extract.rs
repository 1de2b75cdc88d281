//! Request extractors whose rejections are the API's JSON errors (axum's
//! own answer in plain text), the family-name check made before any
//! lookup, and what the caller's token lets it see.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::error::{ApiError, ErrorCode};

/// Longest family name the kernel can hold: GENL_NAMSIZ (16) less the NUL.
pub const MAX_FAMILY_NAME: usize = 15;

/// Refuse a family name the kernel can never have: empty, longer than
/// [`MAX_FAMILY_NAME`] bytes, or holding NUL or control characters (the
/// kernel compares up to the first NUL, so `a\0b` would be answered as `a`).
pub fn check_family_name(name: &str) -> Result<(), ApiError> {
    let why = if name.is_empty() {
        "is empty"
    } else if name.len() > MAX_FAMILY_NAME {
        "is longer than 15 bytes (the kernel's GENL_NAMSIZ is 16 with the NUL)"
    } else if name.chars().any(char::is_control) {
        "holds NUL or a control character"
    } else {
        return Ok(());
    };
    Err(ApiError::new(
        ErrorCode::BadFamilyName,
        format!("the family name {name:?} {why}; no kernel family can have it"),
    ))
}

/// `Path`, with a JSON `bad-path` error.
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(Self(v)),
            Err(e @ PathRejection::FailedToDeserializePathParams(_)) => Err(ApiError::new(
                ErrorCode::BadPath,
                format!("{} (percent-encode UTF-8 only)", e.body_text()),
            )),
            Err(e) => Err(ApiError::new(ErrorCode::BadPath, e.body_text())),
        }
    }
}

/// `Query`, with a JSON `bad-query` error (a repeated key is one).
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Self(v))
            .map_err(|e: QueryRejection| ApiError::new(ErrorCode::BadQuery, e.body_text()))
    }
}

/// The families a caller may see: set by the token check on TCP; absent
/// (everything) on the Unix socket, which its file mode guards.
#[derive(Clone, Debug, Default)]
pub struct Visible(Option<Vec<String>>);

impl Visible {
    /// A token's scope.
    pub fn only(families: Vec<String>) -> Self {
        if families.iter().any(|f| f == "*") {
            Self(None)
        } else {
            Self(Some(families))
        }
    }

    /// Whether `family` is in scope.
    pub fn sees(&self, family: &str) -> bool {
        self.0.as_ref().is_none_or(|f| f.iter().any(|f| f == family))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Visible {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Visible>().cloned().unwrap_or_default())
    }
}
