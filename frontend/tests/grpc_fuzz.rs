//! Whatever a client sends, every RPC answers with a result or a status that says what was
//! wrong with the request, never an internal error, and the server goes on serving. Requests
//! are random over every RPC, with strings drawn from random text, names the server knows,
//! SQL and JSON fragments and numbers out of range. `COMB_FUZZ_CASES` raises the number of
//! cases for a long run.

use std::time::Duration;

use comb_backend::{EngineOptions, Function};
use comb_client::proto::comb_client::CombClient;
use comb_client::proto::{
    ExecuteSqlRequest, GetWorkflowRequest, HealthRequest, InvokeRequest, ListWorkflowsRequest, QueryTracesRequest, RegisterFunctionRequest, RegisterWorkflowRequest, SqlStatement,
};
use comb_frontend::{Server, ServerOptions};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

/// Cases: `COMB_FUZZ_CASES`, or `default`.
fn cases(default: u32) -> u32 {
    std::env::var("COMB_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default)
}

const KNOWN: &[&str] = &[
    "count",
    "add",
    "comb_workflows",
    "counters",
    "SELECT * FROM counters",
    "SELECT count(*) FROM function_invocations",
    "SELECT * FROM workflows JOIN change_data ON workflows.lsn = change_data.lsn",
    "CREATE TABLE IF NOT EXISTS t (a BIGINT PRIMARY KEY)",
    "DROP TABLE counters",
    r#"{"id": 1}"#,
    r#"{"id": 1e400}"#,
    r#"{"id": 18446744073709551616}"#,
    r#"{"id": NaN}"#,
    r#"{"id": "\ud800"}"#,
    r#"{"id": -9223372036854775808, "by": -1}"#,
    r#"{"name": "w", "steps": [{"id": "a", "function": "add", "input": "$input"}]}"#,
    r#"{"name": "w", "steps": [{"id": "a", "function": "add", "input": "$b"}, {"id": "b", "function": "add", "input": "$a"}]}"#,
    "$input",
    "",
];

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(KNOWN).prop_map(str::to_owned),
        "\\PC{0,40}",
        "[a-z_]{1,12}",
        "\\{\"id\": -?[0-9]{1,25}(\\.[0-9]{1,5})?(e-?[0-9]{1,4})?\\}",
        (1usize..200).prop_map(|n| format!("{}1{}", "[".repeat(n), "]".repeat(n))),
    ]
}

#[derive(Debug, Clone)]
enum Request {
    ExecuteSql(ExecuteSqlRequest),
    RegisterFunction(RegisterFunctionRequest),
    RegisterWorkflow(RegisterWorkflowRequest),
    Invoke(InvokeRequest),
    GetWorkflow(GetWorkflowRequest),
    ListWorkflows(ListWorkflowsRequest),
    QueryTraces(QueryTracesRequest),
}

fn request() -> impl Strategy<Value = Request> {
    let statement = (text(), text(), prop::collection::vec(text(), 0..3)).prop_map(|(name, sql, params)| SqlStatement { name, sql, params });
    prop_oneof![
        text().prop_map(|sql| Request::ExecuteSql(ExecuteSqlRequest { sql })),
        (text(), prop::collection::vec(statement, 0..3), text())
            .prop_map(|(name, statements, partition_by)| Request::RegisterFunction(RegisterFunctionRequest { name, statements, partition_by })),
        text().prop_map(|spec_json| Request::RegisterWorkflow(RegisterWorkflowRequest { spec_json })),
        (text(), text(), text(), any::<bool>())
            .prop_map(|(workflow, input_json, workflow_id, r#async)| Request::Invoke(InvokeRequest { workflow, input_json, workflow_id, r#async })),
        (text(), any::<bool>()).prop_map(|(workflow_id, _)| Request::GetWorkflow(GetWorkflowRequest { workflow_id, wait: false })),
        (text(), any::<i32>(), any::<u32>(), text())
            .prop_map(|(name, status, page_size, page_token)| Request::ListWorkflows(ListWorkflowsRequest { name, status, page_size, page_token })),
        (text(), any::<bool>()).prop_map(|(sql, catch_up)| Request::QueryTraces(QueryTracesRequest { sql, catch_up })),
    ]
}

/// Sends one request; the status code when it was refused.
async fn send(client: &CombClient<Channel>, request: Request) -> Option<tonic::Status> {
    let mut c = client.clone();
    let result = match request {
        Request::ExecuteSql(r) => c.execute_sql(r).await.map(drop),
        Request::RegisterFunction(r) => c.register_function(r).await.map(drop),
        Request::RegisterWorkflow(r) => c.register_workflow(r).await.map(drop),
        Request::Invoke(r) => c.invoke(r).await.map(drop),
        Request::GetWorkflow(r) => c.get_workflow(r).await.map(drop),
        Request::ListWorkflows(r) => c.list_workflows(r).await.map(drop),
        Request::QueryTraces(r) => c.query_traces(r).await.map(drop),
    };
    result.err()
}

/// Starts a server with a `count` workflow over `dir`.
async fn start(dir: &std::path::Path) -> (Server, comb_frontend::Listening, CombClient<Channel>) {
    let options = ServerOptions { engine: EngineOptions { partitions: 2, ..EngineOptions::default() }, wait_max: Duration::from_secs(5), ..ServerOptions::default() };
    let add = Function::new("add")
        .statement("add", "INSERT INTO counters (id, n) VALUES ($1, $2) ON CONFLICT (id) DO UPDATE SET n = counters.n + excluded.n RETURNING n")
        .partition_by("id")
        .run(|tx, input| {
            let id = input["id"].as_i64().ok_or("id must be an integer")?;
            let n: i64 = tx.query_one("add", (id, input["by"].as_i64().unwrap_or(1)))?;
            Ok(json!({ "id": id, "n": n }))
        });
    let server = Server::builder()
        .data_dir(dir)
        .options(options)
        .schema("CREATE TABLE IF NOT EXISTS counters (id BIGINT PRIMARY KEY, n BIGINT NOT NULL)")
        .function(add)
        .workflow(r#"{"name": "count", "steps": [{"id": "add", "function": "add", "input": "$input"}], "output": "$add"}"#)
        .build()
        .await
        .unwrap();
    let listening = server.listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let client = CombClient::connect(format!("http://{}", listening.local_addr())).await.unwrap();
    (server, listening, client)
}

#[test]
fn no_request_gets_an_internal_error_or_stops_the_server() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (server, listening, client) = runtime.block_on(start(dir.path()));

    let mut runner = TestRunner::new(Config { cases: cases(512), ..Config::default() });
    let refused = std::sync::Mutex::new(std::collections::BTreeMap::<String, u32>::new());
    runner
        .run(&request(), |request| {
            let shown = format!("{request:?}");
            if let Some(status) = runtime.block_on(send(&client, request)) {
                prop_assert!(
                    !matches!(status.code(), Code::Internal | Code::Unknown | Code::Unimplemented | Code::DataLoss | Code::Unavailable),
                    "{shown} was answered {:?}: {}",
                    status.code(),
                    status.message()
                );
                prop_assert!(!status.message().is_empty(), "{shown}: a refusal without a reason");
                *refused.lock().unwrap().entry(format!("{:?}", status.code())).or_default() += 1;
            }
            Ok(())
        })
        .unwrap();
    let refused = refused.into_inner().unwrap();
    assert!(!refused.is_empty(), "every random request succeeded: the generator is too tame");
    eprintln!("refusals by status: {refused:?}");

    runtime.block_on(async {
        let mut c = client.clone();
        c.health(HealthRequest {}).await.expect("the server still serves");
        listening.shutdown().await.unwrap();
        server.close().await.unwrap();
    });
}

/// Sends bytes as they are: a request no generated client can build.
#[derive(Debug, Clone, Copy)]
struct RawCodec;

impl tonic::codec::Codec for RawCodec {
    type Encode = bytes::Bytes;
    type Decode = bytes::Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }

    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl tonic::codec::Encoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: bytes::Bytes, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for RawCodec {
    type Item = bytes::Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<bytes::Bytes>, tonic::Status> {
        let n = bytes::Buf::remaining(src);
        Ok(Some(bytes::Buf::copy_to_bytes(src, n)))
    }
}

#[test]
fn invalid_utf8_and_broken_protobuf_are_refused_by_name_and_the_server_goes_on() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime.block_on(async {
        let (server, listening, mut client) = start(dir.path()).await;
        let channel = Channel::from_shared(format!("http://{}", listening.local_addr())).unwrap().connect().await.unwrap();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/comb.v1.Comb/Invoke");
        // Field 1 (the workflow's name, a string) holding 0xff 0xfe; a length beyond the
        // message; a field number of zero.
        for (body, says) in [(&[0x0a, 0x02, 0xff, 0xfe][..], "UTF-8"), (&[0x0a, 0x7f, b'x'][..], "buffer"), (&[0x00, 0x01][..], "tag")] {
            let mut grpc = tonic::client::Grpc::new(channel.clone());
            grpc.ready().await.unwrap();
            let status = grpc.unary(tonic::Request::new(bytes::Bytes::from_static(body)), path.clone(), RawCodec).await.expect_err("a broken request was served");
            // gRPC's status codes name a request that does not parse INTERNAL; the message
            // says what was wrong.
            assert_eq!(status.code(), Code::Internal, "{status:?}");
            assert!(status.message().contains("failed to decode Protobuf message") && status.message().contains(says), "{}", status.message());
        }
        client.health(HealthRequest {}).await.expect("the server still serves");
        listening.shutdown().await.unwrap();
        server.close().await.unwrap();
    });
}
