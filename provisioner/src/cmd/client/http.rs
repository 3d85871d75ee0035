//! A small blocking HTTPS client for the API (reqwest with rustls/aws-lc-rs).

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

/// Percent-encodes one path segment.
pub fn seg(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// An authenticated API client.
#[derive(Debug)]
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::blocking::Client,
    stream: reqwest::blocking::Client,
}

impl ApiClient {
    /// A client for `base`, trusting only `ca` when given (else the system roots).
    pub fn new(base: &str, token: &str, ca: Option<&Path>) -> anyhow::Result<Self> {
        let build = |timeout: Option<Duration>| -> anyhow::Result<reqwest::blocking::Client> {
            let mut b = reqwest::blocking::Client::builder().timeout(timeout);
            if let Some(ca) = ca {
                let pem = std::fs::read(ca).with_context(|| ca.display().to_string())?;
                let certs =
                    reqwest::Certificate::from_pem_bundle(&pem).with_context(|| ca.display().to_string())?;
                b = b.tls_certs_only(certs);
            }
            Ok(b.build()?)
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: build(Some(Duration::from_secs(60)))?,
            stream: build(None)?,
        })
    }

    fn finish(resp: reqwest::blocking::Response) -> anyhow::Result<Value> {
        let status = resp.status();
        let text = resp.text()?;
        let v: Value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let code = v["code"].as_str().unwrap_or("");
            let msg = v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            let field = v["field"]
                .as_str()
                .map(|f| format!(" (field `{f}`)"))
                .unwrap_or_default();
            bail!("HTTP {status} {code}: {msg}{field}");
        }
        Ok(v)
    }

    /// GET `path?query` as JSON.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("GET {}{path}", self.base))?;
        Self::finish(resp)
    }

    /// GET `path` as raw bytes (credential downloads); errors as for JSON calls.
    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("GET {}{path}", self.base))?;
        if !resp.status().is_success() {
            Self::finish(resp)?;
            bail!("unexpected answer");
        }
        Ok(resp.bytes()?.to_vec())
    }

    /// POST with no body, JSON answer.
    pub fn post(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .with_context(|| format!("POST {}{path}", self.base))?;
        Self::finish(resp)
    }

    /// POST `path` with a JSON body; errors as for [`ApiClient::post`].
    pub fn post_json(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .with_context(|| format!("POST {}{path}", self.base))?;
        Self::finish(resp)
    }

    /// Reads a Server-Sent Events stream until it ends, calling `on(event, data)`.
    pub fn follow(
        &self,
        path: &str,
        query: &[(&str, &str)],
        mut on: impl FnMut(&str, &str),
    ) -> anyhow::Result<()> {
        let resp = self
            .stream
            .get(format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .with_context(|| format!("GET {}{path}", self.base))?;
        if !resp.status().is_success() {
            Self::finish(resp)?;
            bail!("event stream refused");
        }
        let mut event = String::from("message");
        let mut data = String::new();
        for line in std::io::BufReader::new(resp).lines() {
            let line = line?;
            if line.is_empty() {
                if !data.is_empty() {
                    on(&event, &data);
                }
                event = "message".into();
                data.clear();
            } else if let Some(v) = line.strip_prefix("event:") {
                event = v.trim().to_string();
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        Ok(())
    }
}
