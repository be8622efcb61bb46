//! EC2 failures, sorted by what the operator has to do about them.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

/// Why an EC2 call failed. Messages name the account and say what to do;
/// they never contain credential values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Ec2Error {
    #[error(
        "cloud account {account}: no AWS credentials{}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in metrom-controller's environment, or give the account a profile of ~/.aws/credentials (metrom cloud add … --profile NAME) ({detail})",
        profile.as_ref().map(|p| format!(" in profile '{p}'")).unwrap_or_default()
    )]
    Credentials {
        account: String,
        profile: Option<String>,
        detail: String,
    },
    #[error(
        "cloud account {account}: {endpoint} refused the credentials ({code}: {message}); check the access key metrom-controller uses for this account and its permissions"
    )]
    Auth {
        account: String,
        endpoint: String,
        code: String,
        message: String,
    },
    #[error(
        "cloud account {account}: {call} still throttled by {endpoint} after retries with backoff ({code}); Metrom tries again on its next pass"
    )]
    Throttled {
        account: String,
        endpoint: String,
        call: &'static str,
        code: String,
    },
    #[error(
        "cloud account {account}: cannot reach the EC2 endpoint {endpoint} ({detail}); check the account's endpoint and region and the network, Metrom keeps retrying"
    )]
    Unreachable {
        account: String,
        endpoint: String,
        detail: String,
    },
    #[error("cloud account {account}: {call} failed: {code}: {message}")]
    Service {
        account: String,
        call: &'static str,
        code: String,
        message: String,
        /// HTTP status of the answer.
        status: u16,
    },
    #[error("cloud account {account}: {call}: unexpected answer: {detail}")]
    Malformed {
        account: String,
        call: &'static str,
        detail: String,
    },
}

/// Error codes EC2 uses for refused credentials.
const AUTH_CODES: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
    "Blocked",
    "ExpiredToken",
    "RequestExpired",
];

/// Error codes of throttling.
const THROTTLE_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "EC2ThrottledException",
    "RequestThrottled",
];

pub(crate) fn classify<E>(
    account: &str,
    endpoint: &str,
    call: &'static str,
    e: SdkError<E>,
) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let account = account.to_string();
    let endpoint = endpoint.to_string();
    match &e {
        SdkError::ServiceError(se) => {
            let err = se.err();
            let code = err.code().unwrap_or("").to_string();
            let message = err.message().unwrap_or("").to_string();
            let status = se.raw().status().as_u16();
            if AUTH_CODES.contains(&code.as_str()) {
                Ec2Error::Auth {
                    account,
                    endpoint,
                    code,
                    message,
                }
            } else if THROTTLE_CODES.contains(&code.as_str()) {
                Ec2Error::Throttled {
                    account,
                    endpoint,
                    call,
                    code,
                }
            } else {
                Ec2Error::Service {
                    account,
                    call,
                    code: if code.is_empty() {
                        format!("HTTP {status}")
                    } else {
                        code
                    },
                    message,
                    status,
                }
            }
        }
        SdkError::TimeoutError(_) => Ec2Error::Unreachable {
            account,
            endpoint,
            detail: "timed out".into(),
        },
        SdkError::DispatchFailure(d) => {
            let detail = chain(&e);
            if d.is_user() || d.is_other() {
                // Identity resolution (credentials) fails here too.
                if detail.contains("credentials") {
                    return Ec2Error::Credentials {
                        account,
                        profile: None,
                        detail,
                    };
                }
            }
            Ec2Error::Unreachable {
                account,
                endpoint,
                detail,
            }
        }
        SdkError::ResponseError(_) => Ec2Error::Malformed {
            account,
            call,
            detail: chain(&e),
        },
        _ => {
            let detail = chain(&e);
            if detail.contains("credentials") {
                Ec2Error::Credentials {
                    account,
                    profile: None,
                    detail,
                }
            } else {
                Ec2Error::Malformed {
                    account,
                    call,
                    detail,
                }
            }
        }
    }
}

/// `a: b: c` for an error and its sources.
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        cur = s.source();
    }
    parts.join(": ")
}
