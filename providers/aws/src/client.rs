//! EC2 and Elastic Load Balancing (v2) clients per (credentials, region), and the one way every call goes out:
//! through the rate limiter and backon's retry loop.
//!
//! Retries are layered on purpose. The SDK's own retry is set to a single attempt, so that every request on the
//! wire has first taken a token from our bucket and the budget counts what AWS really sees; backon then retries
//! throttling (`RequestLimitExceeded`, `Throttling`), 5xx answers, timeouts and connection errors with capped
//! exponential backoff and full jitter. One layer of retries means attempts never multiply (the SDK's 3 times
//! backon's N). What is still failing after that goes back to the controller as `Transient`, which requeues.
//!
//! Both services' clients of one account and region share one limiter: AWS throttles each service on its own, so
//! one set of budgets for the two is stricter than either needs, and it keeps a single knob.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use backon::{ExponentialBuilder, Retryable};
use slipway_provider::{KeyedCache, ProviderError};

use crate::credentials::AwsCredentials;
use crate::throttle::{ApiClass, Limiter, Limiters};

/// How calls are retried within one provider call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Retries after the first attempt.
    pub max_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_retries: 6,
        }
    }
}

/// An AWS call that failed, reduced to what the provider decides on. Holds no request data, so no secret.
#[derive(Debug, Clone)]
pub(crate) struct AwsError {
    /// `EC2` or `ELB`, for messages.
    pub service: &'static str,
    pub operation: &'static str,
    /// The service's error code, e.g. `InvalidAMIID.NotFound`, `DependencyViolation`, `ResourceInUse`.
    pub code: Option<String>,
    pub message: String,
    pub status: Option<u16>,
    /// No answer at all: timeout, connection refused, DNS.
    pub unanswered: bool,
}

const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "Unavailable",
    "InternalError",
    "InternalFailure",
];

const CREDENTIAL_CODES: &[&str] = &[
    "AuthFailure",
    "UnauthorizedOperation",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "OptInRequired",
    "Blocked",
    // Elastic Load Balancing's answer when the key's IAM policy does not allow the call.
    "AccessDenied",
];

const CAPACITY_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
    "AddressLimitExceeded",
    "VpcLimitExceeded",
    "SubnetLimitExceeded",
    "InsufficientFreeAddressesInSubnet",
    // Elastic Load Balancing's quotas.
    "TooManyLoadBalancers",
    "TooManyTargetGroups",
    "TooManyListeners",
    "TooManyTargets",
];

impl AwsError {
    fn from_sdk<E>(
        service: &'static str,
        operation: &'static str,
        error: SdkError<E, HttpResponse>,
    ) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let status = error.raw_response().map(|r| r.status().as_u16());
        let unanswered = matches!(
            error,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_)
        );
        let code = error.code().map(str::to_string);
        let message = error
            .message()
            .map(str::to_string)
            .unwrap_or_else(|| DisplayErrorContext(&error).to_string());
        Self {
            service,
            operation,
            code,
            message,
            status,
            unanswered,
        }
    }

    pub fn code_is(&self, code: &str) -> bool {
        self.code.as_deref() == Some(code)
    }

    pub fn code_starts_with(&self, prefix: &str) -> bool {
        self.code.as_deref().is_some_and(|c| c.starts_with(prefix))
    }

    /// Whether trying the same request again soon can succeed.
    pub fn is_retryable(&self) -> bool {
        self.unanswered
            || self.status.is_some_and(|s| s >= 500 || s == 429)
            || self
                .code
                .as_deref()
                .is_some_and(|c| THROTTLING_CODES.contains(&c))
    }

    /// The provider error for a failure while working on `what` (e.g. "instance default/demo-md-0").
    pub fn into_provider(self, what: &str) -> ProviderError {
        let code = self.code.clone().unwrap_or_else(|| "unknown".into());
        let text = format!(
            "{what}: {} {} failed: {code}: {}",
            self.service, self.operation, self.message
        );
        match self.code.as_deref() {
            Some(c) if CREDENTIAL_CODES.contains(&c) => ProviderError::permanent(
                "InvalidCredentials",
                format!(
                    "{text}; check the Secret named in spec.infrastructure.aws.credentialsSecretRef \
                     and the IAM policy of its access key"
                ),
            ),
            Some(c) if CAPACITY_CODES.contains(&c) => {
                ProviderError::capacity("InsufficientCapacity", text)
            }
            Some("DependencyViolation") => ProviderError::transient("DependencyViolation", text),
            Some(c) if c.starts_with("InvalidAMIID") => ProviderError::permanent(
                "ImageNotFound",
                format!("{text}; set a machine image that exists in the region"),
            ),
            Some(c) if c.starts_with("InvalidInstanceType") || c == "Unsupported" => {
                ProviderError::permanent(
                    "InvalidInstanceType",
                    format!("{text}; set an instance type offered in the region"),
                )
            }
            Some(c)
                if c.starts_with("InvalidParameter")
                    || c.starts_with("MissingParameter")
                    || c.ends_with(".Malformed") =>
            {
                ProviderError::permanent("InvalidSettings", text)
            }
            _ if self.is_retryable() => ProviderError::transient("Throttled", text),
            _ => ProviderError::transient("AwsError", text),
        }
    }
}

/// One account's client of one AWS service in one region, with its rate limiter.
pub(crate) struct Service<C> {
    pub client: C,
    /// `EC2` or `ELB`, for messages.
    name: &'static str,
    limiter: Arc<Limiter>,
    retry: RetryPolicy,
}

pub(crate) type Ec2 = Service<aws_sdk_ec2::Client>;
pub(crate) type Elb = Service<aws_sdk_elasticloadbalancingv2::Client>;

/// The clients of one account in one region.
pub(crate) struct Aws {
    pub ec2: Ec2,
    pub elb: Elb,
}

impl<C> Service<C> {
    /// Sends one call: takes a token from `class`'s budget before every attempt, retries what is worth
    /// retrying. `send` builds and sends the request; it is called once per attempt.
    pub async fn call<T, E, F, Fut>(
        &self,
        class: ApiClass,
        operation: &'static str,
        mut send: F,
    ) -> Result<T, AwsError>
    where
        F: FnMut(&C) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E, HttpResponse>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries)
            .with_jitter();
        let attempt = || {
            // The SDK's futures do nothing until polled, so the token is taken before the request is sent.
            let request = send(&self.client);
            let limiter = self.limiter.clone();
            let service = self.name;
            async move {
                limiter.acquire(class).await;
                request
                    .await
                    .map_err(|e| AwsError::from_sdk(service, operation, e))
            }
        };
        attempt
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(AwsError::is_retryable)
            .notify(|e: &AwsError, after: Duration| {
                tracing::debug!(
                    service = self.name,
                    operation,
                    code = e.code.as_deref().unwrap_or("none"),
                    retry_in_ms = after.as_millis() as u64,
                    "retrying AWS call"
                );
            })
            .await
    }
}

/// Where and how clients are made.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientSettings {
    pub endpoint_url: Option<String>,
    pub retry: RetryPolicy,
}

/// Clients by (region, credential fingerprint): building one loads config and TLS roots, so it is done once.
pub(crate) struct Clients {
    settings: ClientSettings,
    limiters: Limiters,
    cache: KeyedCache<(String, String), Arc<Aws>>,
}

impl Clients {
    pub fn new(settings: ClientSettings, limiters: Limiters) -> Self {
        Self {
            settings,
            limiters,
            cache: KeyedCache::new(),
        }
    }

    pub async fn get(&self, region: &str, credentials: Option<&AwsCredentials>) -> Arc<Aws> {
        let fingerprint = credentials.map_or_else(|| "default-chain".into(), |c| c.fingerprint());
        let key = (region.to_string(), fingerprint);
        if let Some(aws) = self.cache.get(&key) {
            return aws;
        }
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            // One attempt: backon retries, after the rate limiter (see the module docs).
            .retry_config(RetryConfig::standard().with_max_attempts(1))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(30))
                    .build(),
            );
        if let Some(credentials) = credentials {
            loader = loader.credentials_provider(credentials.to_sdk());
        }
        if let Some(endpoint) = &self.settings.endpoint_url {
            loader = loader.endpoint_url(endpoint);
        }
        let config = loader.load().await;
        // The limiter is shared by everything using the same account in the region, whatever the secret's
        // rotation state: AWS throttles by account, not by secret.
        let limiter = self.limiters.get(
            credentials.map_or("default-chain", |c| c.access_key_id()),
            region,
        );
        let aws = Arc::new(Aws {
            ec2: Service {
                client: aws_sdk_ec2::Client::new(&config),
                name: "EC2",
                limiter: limiter.clone(),
                retry: self.settings.retry,
            },
            elb: Service {
                client: aws_sdk_elasticloadbalancingv2::Client::new(&config),
                name: "ELB",
                limiter,
                retry: self.settings.retry,
            },
        });
        self.cache.insert(key, aws.clone());
        aws
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, status: u16) -> AwsError {
        AwsError {
            service: "EC2",
            operation: "RunInstances",
            code: Some(code.into()),
            message: "m".into(),
            status: Some(status),
            unanswered: false,
        }
    }

    #[test]
    fn throttling_and_server_errors_are_retried_client_errors_are_not() {
        assert!(error("RequestLimitExceeded", 503).is_retryable());
        assert!(error("Throttling", 400).is_retryable());
        assert!(error("Whatever", 500).is_retryable());
        assert!(!error("InvalidAMIID.NotFound", 400).is_retryable());
        assert!(!error("DependencyViolation", 400).is_retryable());
    }

    #[test]
    fn errors_map_to_reasons_a_person_can_act_on() {
        let e = error("InvalidAMIID.NotFound", 400).into_provider("machine default/demo-cp-0");
        assert_eq!(e.reason(), "ImageNotFound");
        assert!(!e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("machine default/demo-cp-0: EC2 RunInstances failed")
        );
        assert_eq!(
            error("AuthFailure", 401).into_provider("x").reason(),
            "InvalidCredentials"
        );
        assert_eq!(
            error("InsufficientInstanceCapacity", 500)
                .into_provider("x")
                .reason(),
            "InsufficientCapacity"
        );
        assert_eq!(
            error("RequestLimitExceeded", 503)
                .into_provider("x")
                .reason(),
            "Throttled"
        );
    }
}
