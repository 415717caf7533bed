/// Why bootstrap material could not be made or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),

    /// A Secret that should hold bootstrap material (a key pair, a token) does not; `secret` names it, `what` says
    /// what is wrong.
    #[error("Secret {secret}: {what}")]
    InvalidSecret { secret: String, what: String },

    #[error("rendering {what}: {message}")]
    Render { what: &'static str, message: String },
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Certificate(_) => "certificate",
            Self::InvalidSecret { .. } => "invalid_secret",
            Self::Render { .. } => "render",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
