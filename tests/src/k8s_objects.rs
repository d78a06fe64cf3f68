//! Kubernetes objects as the API server holds them (JSON, fields as the API
//! reference defines them), for the tests and the benchmark to write into
//! the harness API server.

use serde_json::{Value, json};

/// An endpoint as the EndpointSlice controller writes it.
pub fn endpoint(addr: &str, node: &str, ready: bool, serving: bool, terminating: bool) -> Value {
    json!({
        "addresses": [addr],
        "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
        "nodeName": node,
        "targetRef": { "kind": "Pod", "namespace": "default", "name": format!("pod-{addr}") }
    })
}

/// The IPv4 EndpointSlice of Service `default/<service>`, with one port.
pub fn slice(service: &str, port: (&str, u16, &str), endpoints: Vec<Value>) -> Value {
    let (name, number, protocol) = port;
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-abcde"),
            "namespace": "default",
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"
            }
        },
        "addressType": "IPv4",
        "ports": [{ "name": name, "port": number, "protocol": protocol }],
        "endpoints": endpoints
    })
}
