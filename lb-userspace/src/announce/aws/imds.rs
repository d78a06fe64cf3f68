//! What this instance is, from the instance metadata service: its region
//! and the ENI that takes the VIPs. IMDSv2 only (a session token first,
//! then every read with it), which is what aws-config's client speaks; an
//! instance that requires IMDSv2 refuses anything else. In a pod with
//! host networking the token's hop limit must allow the extra hop (see
//! docs/aws.md).

use aws_config::imds::Client;

#[derive(Debug, thiserror::Error)]
#[error("instance metadata (IMDSv2) {path}: {message}; set announce.aws.{setting} to skip it")]
pub struct ImdsError {
    pub path: String,
    pub message: String,
    pub setting: &'static str,
}

pub fn client(url: Option<&str>) -> Result<Client, ImdsError> {
    let b = Client::builder().configure(
        &aws_config::provider_config::ProviderConfig::default()
            .with_http_client(super::http_client()),
    );
    let b = match url {
        Some(u) => b.endpoint(u).map_err(|e| ImdsError {
            path: u.to_owned(),
            message: format!("not a usable endpoint: {e}"),
            setting: "imds_url",
        })?,
        None => b,
    };
    Ok(b.build())
}

async fn get(c: &Client, path: &str, setting: &'static str) -> Result<String, ImdsError> {
    c.get(path)
        .await
        .map(|v| v.as_ref().trim().to_owned())
        .map_err(|e| ImdsError {
            path: path.to_owned(),
            message: aws_smithy_error(&e),
            setting,
        })
}

fn aws_smithy_error(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

pub async fn region(c: &Client) -> Result<String, ImdsError> {
    get(c, "/latest/meta-data/placement/region", "region").await
}

/// The primary ENI: the one of the instance's `mac`.
pub async fn primary_eni(c: &Client) -> Result<String, ImdsError> {
    let mac = get(c, "/latest/meta-data/mac", "network_interface_id").await?;
    let path = format!("/latest/meta-data/network/interfaces/macs/{mac}/interface-id");
    get(c, &path, "network_interface_id").await
}
