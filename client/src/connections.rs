//! Connections to members, by address, and the settings every request carries (deadline,
//! bearer token). Shared by the data client ([`crate::Client`]) and the admin client
//! ([`crate::AdminClient`]).

use std::collections::HashMap;
use std::sync::Mutex;

use hotlake_proto::errors::{self, ErrorKind};
use hotlake_proto::v1::admin_client::AdminClient as AdminStub;
use hotlake_proto::v1::hotlake_client::HotlakeClient;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::client::ClientBuilder;
use crate::ClientError;

/// One lazily opened channel per member address.
pub(crate) struct Connections {
    settings: ClientBuilder,
    token: Option<MetadataValue<Ascii>>,
    channels: Mutex<HashMap<String, Channel>>,
}

impl Connections {
    /// Checks the settings; opens nothing yet.
    pub(crate) fn new(settings: ClientBuilder) -> Result<Self, ClientError> {
        let token = match &settings.token {
            Some(t) => Some(MetadataValue::try_from(format!("Bearer {t}")).map_err(|_| ClientError::Rejected {
                kind: ErrorKind::InvalidArgument.as_str().into(),
                message: "the token must be printable ASCII".into(),
            })?),
            None => None,
        };
        Ok(Connections { settings, token, channels: Mutex::new(HashMap::new()) })
    }

    pub(crate) fn settings(&self) -> &ClientBuilder {
        &self.settings
    }

    fn channel(&self, addr: &str) -> Result<Channel, ClientError> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(addr) {
            return Ok(c.clone());
        }
        let s = &self.settings;
        let bad = |e: tonic::transport::Error| ClientError::Connect { addrs: addr.into(), reason: e.to_string() };
        let mut endpoint = secure(s, addr).map_err(bad)?.connect_timeout(s.connect_timeout).tcp_nodelay(true);
        if let Some(hook) = &s.endpoint_hook {
            endpoint = hook(endpoint).map_err(bad)?;
        }
        let c = endpoint.connect_lazy();
        channels.insert(addr.to_string(), c.clone());
        Ok(c)
    }

    /// The data service at `addr`.
    pub(crate) fn data(&self, addr: &str) -> Result<HotlakeClient<Channel>, ClientError> {
        let max = self.settings.message_bytes_max;
        Ok(HotlakeClient::new(self.channel(addr)?).max_decoding_message_size(max).max_encoding_message_size(max))
    }

    /// The admin service at `addr`.
    pub(crate) fn admin(&self, addr: &str) -> Result<AdminStub<Channel>, ClientError> {
        let max = self.settings.message_bytes_max;
        Ok(AdminStub::new(self.channel(addr)?).max_decoding_message_size(max))
    }

    /// A request with the deadline and the token.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = self.stream_request(message);
        r.set_timeout(self.settings.request_timeout);
        r
    }

    /// A request without a deadline, for a call that streams for as long as it is read.
    pub(crate) fn stream_request<T>(&self, message: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(message);
        if let Some(t) = &self.token {
            r.metadata_mut().insert(errors::AUTHORIZATION_KEY, t.clone());
        }
        r
    }
}

/// The endpoint of `addr`, with TLS when the settings have it (simulation builds have none).
fn secure(settings: &ClientBuilder, addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    #[cfg(not(madsim))]
    if let Some(tls) = &settings.tls {
        return Endpoint::from_shared(format!("https://{addr}"))?.tls_config(tls.clone());
    }
    #[cfg(madsim)]
    let _ = settings;
    Endpoint::from_shared(format!("http://{addr}"))
}

/// `host:port` from an address given with or without a scheme.
pub(crate) fn normalize(addr: &str) -> String {
    addr.trim().trim_start_matches("http://").trim_start_matches("https://").trim_end_matches('/').to_string()
}
