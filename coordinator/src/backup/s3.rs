//! A backup target in an S3 (or S3-compatible) bucket, through object_store:
//! large files go up as multipart uploads streamed from disk (bounded
//! memory), every request is bounded by connect and request timeouts and a
//! few retries, and S3's answers become [`TargetError`]s that say what to do.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig, WriteMultipart,
};
use tokio::io::AsyncReadExt;

use super::target::{S3Settings, StoredObject, TargetError};

/// Size of one multipart part; files up to this size go up in one PUT.
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: memory stays under `(PART_CONCURRENCY + 1) * PART_SIZE`.
pub const PART_CONCURRENCY: usize = 2;
/// How long one request (e.g. one part) may take once connected.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Credentials from the environment (never from the fleet file).
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    pub key_id: String,
    pub secret: String,
    pub token: Option<String>,
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A bucket and prefix, with a client for them.
#[derive(Debug)]
pub struct S3Target {
    url: String,
    /// The endpoint, for messages.
    endpoint: String,
    bucket: String,
    prefix: Option<ObjectPath>,
    store: AmazonS3,
    timeout: Duration,
}

impl S3Target {
    /// A client for `bucket`/`prefix`; `timeout` bounds connecting and the
    /// first check. No request is made yet.
    pub fn new(
        url: String,
        bucket: &str,
        prefix: &str,
        settings: &S3Settings,
        credentials: S3Credentials,
        timeout: Duration,
    ) -> Result<S3Target, TargetError> {
        // reqwest uses the process-wide rustls provider (ring).
        etcdops_certs::install_crypto_provider();
        let endpoint = settings
            .endpoint
            .clone()
            .map(|e| e.trim_end_matches('/').to_string())
            .unwrap_or_else(|| format!("https://s3.{}.amazonaws.com", settings.region));
        if endpoint.starts_with("http://") && !settings.allow_http {
            return Err(TargetError::Setup {
                target: url,
                detail: format!(
                    "s3_endpoint {endpoint} is plain http: use https, or set s3_allow_http = true (test servers only)"
                ),
            });
        }
        let client = ClientOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(REQUEST_TIMEOUT.max(timeout))
            .with_allow_http(settings.allow_http);
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 3,
            retry_timeout: REQUEST_TIMEOUT,
        };
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(&settings.region)
            .with_access_key_id(&credentials.key_id)
            .with_secret_access_key(&credentials.secret)
            .with_allow_http(settings.allow_http)
            .with_client_options(client)
            .with_retry(retry);
        if let Some(token) = &credentials.token {
            builder = builder.with_token(token);
        }
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
        }
        let store = builder.build().map_err(|e| TargetError::Setup {
            target: url.clone(),
            detail: innermost(&e),
        })?;
        let prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix));
        Ok(S3Target {
            url,
            endpoint,
            bucket: bucket.to_string(),
            prefix,
            store,
            timeout,
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, name: &str) -> ObjectPath {
        match &self.prefix {
            Some(prefix) => prefix.clone().join(name),
            None => ObjectPath::from(name),
        }
    }

    /// Turns an object_store error into what the user can act on.
    fn error(&self, what: &str, e: &object_store::Error) -> TargetError {
        let detail = innermost(e);
        let text = chain_text(e);
        let unreachable =
            std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| e.source())
                .filter_map(|e| e.downcast_ref::<object_store::client::HttpError>())
                .any(|h| {
                    matches!(
                        h.kind(),
                        object_store::client::HttpErrorKind::Connect
                            | object_store::client::HttpErrorKind::Timeout
                    )
                });
        if unreachable {
            return TargetError::Unreachable {
                target: self.url.clone(),
                endpoint: self.endpoint.clone(),
                within: self.timeout,
                detail,
            };
        }
        if text.contains("NoSuchBucket") {
            return TargetError::NoBucket {
                target: self.url.clone(),
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
            };
        }
        let denied = matches!(
            e,
            object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }
        ) || ["AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"]
            .iter()
            .any(|c| text.contains(c));
        if denied {
            return TargetError::Denied {
                target: self.url.clone(),
                endpoint: self.endpoint.clone(),
                detail,
            };
        }
        TargetError::S3 {
            target: self.url.clone(),
            what: what.to_string(),
            detail: text,
        }
    }

    /// Lists the prefix once, within three times the timeout: the endpoint
    /// answers, the credentials work and the bucket exists.
    pub async fn check(&self) -> Result<(), TargetError> {
        let budget = self.timeout * 3;
        match tokio::time::timeout(budget, self.store.list_with_delimiter(self.prefix.as_ref())).await {
            Err(_) => Err(TargetError::Unreachable {
                target: self.url.clone(),
                endpoint: self.endpoint.clone(),
                within: budget,
                detail: "no answer".to_string(),
            }),
            Ok(Err(e @ object_store::Error::NotFound { .. })) => {
                tracing::debug!(error = %chain_text(&e), "listing the bucket: not found");
                Err(TargetError::NoBucket {
                    target: self.url.clone(),
                    bucket: self.bucket.clone(),
                    endpoint: self.endpoint.clone(),
                })
            }
            Ok(Err(e)) => Err(self.error("listing the bucket", &e)),
            Ok(Ok(_)) => Ok(()),
        }
    }

    pub async fn list(&self) -> Result<Vec<StoredObject>, TargetError> {
        let listing = self
            .store
            .list_with_delimiter(self.prefix.as_ref())
            .await
            .map_err(|e| self.error("listing the bucket", &e))?;
        let mut objects: Vec<StoredObject> = listing
            .objects
            .into_iter()
            .filter_map(|o| {
                o.location.filename().map(|n| StoredObject {
                    name: n.to_string(),
                    size: o.size,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(objects)
    }

    async fn refuse_existing(&self, name: &str) -> Result<(), TargetError> {
        if self.size(name).await?.is_some() {
            return Err(TargetError::Exists {
                target: self.url.clone(),
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Uploads `source` as `name`: one PUT up to [`PART_SIZE`], otherwise a
    /// multipart upload read from the file part by part (aborted on failure).
    pub async fn put_file(&self, name: &str, source: &Path) -> Result<u64, TargetError> {
        self.refuse_existing(name).await?;
        let path = self.path(name);
        let read_err = |e| TargetError::Io {
            target: self.url.clone(),
            what: format!("cannot read the staged snapshot {}", source.display()),
            source: e,
        };
        let mut file = tokio::fs::File::open(source).await.map_err(read_err)?;
        let size = file.metadata().await.map_err(read_err)?.len();
        if size <= PART_SIZE as u64 {
            let mut data = Vec::with_capacity(size as usize);
            file.read_to_end(&mut data).await.map_err(read_err)?;
            self.store
                .put(&path, PutPayload::from(data))
                .await
                .map_err(|e| self.error(&format!("uploading {name}"), &e))?;
            return Ok(size);
        }
        let upload = self
            .store
            .put_multipart(&path)
            .await
            .map_err(|e| self.error(&format!("starting the upload of {name}"), &e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1 << 20];
        let mut sent = 0u64;
        let streamed: Result<(), TargetError> = async {
            loop {
                let n = file.read(&mut buf).await.map_err(read_err)?;
                if n == 0 {
                    return Ok(());
                }
                writer
                    .wait_for_capacity(PART_CONCURRENCY)
                    .await
                    .map_err(|e| self.error(&format!("uploading {name}"), &e))?;
                writer.write(&buf[..n]);
                sent += n as u64;
            }
        }
        .await;
        if let Err(e) = streamed {
            let _ = writer.abort().await;
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.error(&format!("completing the upload of {name}"), &e))?;
        tracing::debug!(name, bytes = sent, "uploaded");
        Ok(sent)
    }

    pub async fn put_bytes(&self, name: &str, bytes: Vec<u8>) -> Result<(), TargetError> {
        self.refuse_existing(name).await?;
        self.store
            .put(&self.path(name), PutPayload::from(bytes))
            .await
            .map(|_| ())
            .map_err(|e| self.error(&format!("uploading {name}"), &e))
    }

    pub async fn read(&self, name: &str) -> Result<Vec<u8>, TargetError> {
        let what = format!("reading {name}");
        let got = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.error(&what, &e))?;
        got.bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| self.error(&what, &e))
    }

    /// Streams `name` into the new file `dest` (never overwriting): written
    /// as `<dest>.part`, fsynced, renamed. Returns the bytes written.
    pub async fn download(&self, name: &str, dest: &Path) -> Result<u64, TargetError> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let what = format!("downloading {name}");
        let io = |what: String| {
            let target = self.url.clone();
            move |source| TargetError::Io { target, what, source }
        };
        if dest.exists() {
            return Err(io(format!("{} already exists", dest.display()))(
                std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            ));
        }
        let part = dest.with_extension("db.part");
        let got = self
            .store
            .get(&self.path(name))
            .await
            .map_err(|e| self.error(&what, &e))?;
        let mut file = tokio::fs::File::create(&part)
            .await
            .map_err(io(format!("cannot create {}", part.display())))?;
        let mut stream = got.into_stream();
        let mut written = 0u64;
        let result: Result<(), TargetError> = async {
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.error(&what, &e))?;
                file.write_all(&chunk)
                    .await
                    .map_err(io(format!("writing {}", part.display())))?;
                written += chunk.len() as u64;
            }
            file.sync_all()
                .await
                .map_err(io(format!("syncing {}", part.display())))?;
            Ok(())
        }
        .await;
        drop(file);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&part);
            return Err(e);
        }
        std::fs::rename(&part, dest).map_err(io(format!(
            "renaming {} to {}",
            part.display(),
            dest.display()
        )))?;
        Ok(written)
    }

    pub async fn size(&self, name: &str) -> Result<Option<u64>, TargetError> {
        match self.store.head(&self.path(name)).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&format!("checking {name}"), &e)),
        }
    }

    pub async fn delete(&self, name: &str) -> Result<(), TargetError> {
        match self.store.delete(&self.path(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(&format!("deleting {name}"), &e)),
        }
    }
}

/// The error and its causes on one line.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = String::new();
    for cause in std::iter::successors(Some(e), |e| e.source()) {
        let part = cause.to_string();
        if !text.contains(&part) {
            if !text.is_empty() {
                text.push_str(": ");
            }
            text.push_str(&part);
        }
    }
    text
}

/// The innermost cause: e.g. "Connection refused (os error 111)".
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .last()
        .map(|e| e.to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds() -> S3Credentials {
        S3Credentials {
            key_id: "AKIDEXAMPLE".into(),
            secret: "very-secret".into(),
            token: None,
        }
    }

    #[test]
    fn credentials_never_show_the_secret() {
        assert!(!format!("{:?}", creds()).contains("very-secret"));
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let settings = S3Settings {
            endpoint: Some("http://127.0.0.1:9".into()),
            ..S3Settings::default()
        };
        let err = S3Target::new(
            "s3://b-1/p".into(),
            "b-1",
            "p",
            &settings,
            creds(),
            Duration::from_secs(1),
        )
        .expect_err("http refused");
        assert!(err.to_string().contains("s3_allow_http"), "{err}");
        let settings = S3Settings {
            allow_http: true,
            ..settings
        };
        let t = S3Target::new(
            "s3://b-1/p".into(),
            "b-1",
            "p",
            &settings,
            creds(),
            Duration::from_secs(1),
        )
        .expect("ok");
        assert_eq!(t.path("x.db").to_string(), "p/x.db");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_named_and_bounded() {
        // A port nobody listens on: connection refused, retried a few times, then a clear error.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let endpoint = format!("http://127.0.0.1:{port}");
        let settings = S3Settings {
            endpoint: Some(endpoint.clone()),
            allow_http: true,
            ..S3Settings::default()
        };
        let t = S3Target::new(
            "s3://b-1/p".into(),
            "b-1",
            "p",
            &settings,
            creds(),
            Duration::from_secs(1),
        )
        .expect("ok");
        let started = std::time::Instant::now();
        let err = t.check().await.expect_err("unreachable");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "bounded: {:?}",
            started.elapsed()
        );
        assert!(matches!(err, TargetError::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&endpoint), "{err}");
    }
}
