//! The whole attack surface, enumerated: every RPC of every service, found
//! through server reflection (so an RPC added later is covered without
//! touching this test), called with no token, an expired token, a token for
//! another audience, and a forged one. Only the declared public RPCs may
//! answer anything but UNAUTHENTICATED — and never INTERNAL or UNKNOWN.

mod suite;

use backroom_account::domain::tokens::{SigningKeys, TokenIssuer};
use backroom_shared::client::TracedChannel;
use suite::Suite;
use tokio_stream::StreamExt as _;
use tonic::Code;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

/// Every `/pkg.Service/Method` a server advertises, health and reflection
/// excepted (public by design).
async fn methods(channel: TracedChannel) -> Vec<String> {
    let mut client = ServerReflectionClient::new(channel);
    let list = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([list]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(services)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let mut paths = Vec::new();
    for service in services
        .service
        .into_iter()
        .map(|s| s.name)
        .filter(|n| n.starts_with("backroom."))
    {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(service.clone())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("no descriptor for {service}");
        };
        for bytes in files.file_descriptor_proto {
            let file =
                <prost_types::FileDescriptorProto as prost::Message>::decode(bytes.as_slice())
                    .unwrap();
            for svc in &file.service {
                let full = format!("{}.{}", file.package(), svc.name());
                if full == service {
                    paths.extend(svc.method.iter().map(|m| format!("/{full}/{}", m.name())));
                }
            }
        }
    }
    assert!(!paths.is_empty(), "reflection listed no methods");
    paths
}

/// Calls `path` with an empty request message and `token` (if any); the
/// status code of the answer.
async fn call(channel: TracedChannel, path: &str, token: Option<&str>) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let mut request = tonic::Request::new(());
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    match grpc
        .unary(
            request,
            http::uri::PathAndQuery::try_from(path).unwrap(),
            codec,
        )
        .await
    {
        Ok(_) => Code::Ok,
        Err(status) => status.code(),
    }
}

#[tokio::test]
async fn every_rpc_refuses_missing_expired_misaddressed_and_forged_tokens() {
    let suite = Suite::spawn().await;
    let keys = SigningKeys::from_pem(&suite.keys_pem).unwrap();
    let issuer = TokenIssuer::new(keys, "backroom", chrono::Duration::minutes(15));
    let sub = "accounts/00000000-0000-7000-8000-000000000001".to_owned();
    let roles = vec!["customer".to_owned(), "admin".to_owned()];
    let all = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let (expired, _) = issuer
        .issue(
            sub.clone(),
            roles.clone(),
            all(&backroom_shared::auth::audience::ALL),
            chrono::Utc::now() - chrono::Duration::hours(1),
        )
        .unwrap();
    let stranger = TokenIssuer::new(
        SigningKeys::from_pem(&SigningKeys::generate_pem()).unwrap(),
        "backroom",
        chrono::Duration::minutes(15),
    );
    let (forged, _) = stranger
        .issue(
            sub.clone(),
            roles.clone(),
            all(&backroom_shared::auth::audience::ALL),
            chrono::Utc::now(),
        )
        .unwrap();

    let public = backroom_account::PUBLIC_METHODS;
    let mut checked = 0;
    for (service, server, audience) in [
        ("account", &suite.account, "backroom.account"),
        ("payment", &suite.payment, "backroom.payment"),
    ]
    .into_iter()
    .map(|(name, server, aud)| (name, server.channel.clone(), aud))
    .chain(std::iter::once((
        "inventory",
        {
            // The inventory server is behind a lock (the outage test stops it).
            suite
                .inventory
                .lock()
                .await
                .as_ref()
                .unwrap()
                .channel
                .clone()
        },
        "backroom.inventory",
    ))) {
        // A token every service would accept but this one: wrong audience.
        let other = if audience == "backroom.account" {
            "backroom.payment"
        } else {
            "backroom.account"
        };
        let (misaddressed, _) = issuer
            .issue(
                sub.clone(),
                roles.clone(),
                vec![other.to_owned()],
                chrono::Utc::now(),
            )
            .unwrap();
        for path in methods(server.clone()).await {
            let is_public = public.contains(&path.as_str());
            for (case, token) in [
                ("no token", None),
                ("expired", Some(expired.as_str())),
                ("wrong audience", Some(misaddressed.as_str())),
                ("forged", Some(forged.as_str())),
            ] {
                let code = call(server.clone(), &path, token).await;
                assert!(
                    !matches!(code, Code::Internal | Code::Unknown | Code::Unimplemented),
                    "{service} {path} ({case}): {code:?}"
                );
                if !is_public {
                    assert_eq!(code, Code::Unauthenticated, "{service} {path} ({case})");
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 50, "only {checked} RPCs found");
}
