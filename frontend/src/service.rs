//! The gRPC service: requests in, the scheduler's answers out. Errors become statuses in
//! one place ([`Error::code`](crate::Error::code)).

use std::sync::Arc;
use std::time::Duration;

use comb_backend::{SqlFunction, SqlStatement};
use comb_client::proto::{self, comb_server::Comb};
use comb_tracing::Tracer;
use tonic::{Request, Response, Status, Streaming};

use crate::error::Error;
use crate::options::TRACE_ANSWER_BYTES_MAX;
use crate::scheduler::{FAILED, RUNNING, SUCCEEDED, Scheduler};
use crate::stream::InvokeStream;
use crate::system::WorkflowRow;

/// The service behind the API.
pub(crate) struct Service {
    pub(crate) scheduler: Arc<Scheduler>,
    pub(crate) tracer: Option<Arc<Tracer>>,
    /// Becomes true when the server begins to shut down.
    pub(crate) closing: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service").finish_non_exhaustive()
    }
}

fn status_of(text: &str) -> proto::WorkflowStatus {
    match text {
        RUNNING => proto::WorkflowStatus::Running,
        SUCCEEDED => proto::WorkflowStatus::Succeeded,
        FAILED => proto::WorkflowStatus::Failed,
        _ => proto::WorkflowStatus::Unspecified,
    }
}

pub(crate) fn to_proto(row: WorkflowRow) -> proto::Workflow {
    proto::Workflow {
        status: status_of(&row.status).into(),
        id: row.id,
        name: row.name,
        version: row.version as u64,
        input_json: row.input,
        output_json: row.output.unwrap_or_default(),
        error: row.error.unwrap_or_default(),
        started_us: row.started_us as u64,
        ended_us: row.ended_us.unwrap_or_default() as u64,
    }
}

/// A QueryTraces answer of at most `bytes_max` bytes encoded: its rows in order as long as
/// they fit, the rest cut (the answer says so). Counted as encoded, each row's framing with
/// its JSON: many small rows weigh more than their text.
fn trace_answer(answer: comb_tracing::QueryResult, bytes_max: usize) -> Result<proto::QueryTracesResponse, Error> {
    let rows = answer.rows;
    // Counted with `truncated` set, which may be set below.
    let mut reply = proto::QueryTracesResponse { columns: answer.columns, rows_json: Vec::with_capacity(rows.len()), truncated: true };
    let mut bytes = prost::Message::encoded_len(&reply);
    if bytes > bytes_max {
        let message = format!("its {} column names take {bytes} bytes encoded, more than an answer may ({bytes_max}): select fewer columns or name them shorter", reply.columns.len());
        return Err(Error::InvalidArgument { field: "sql", message });
    }
    reply.truncated = answer.truncated;
    for row in rows {
        let text = serde_json::Value::Array(row).to_string();
        // A string of a repeated field: its tag (one byte), its length (a varint), its text.
        bytes += 1 + prost::encoding::encoded_len_varint(text.len() as u64) + text.len();
        if bytes > bytes_max {
            reply.truncated = true;
            break;
        }
        reply.rows_json.push(text);
    }
    Ok(reply)
}

/// One Invoke, as the unary call and the stream both run it.
pub(crate) async fn invoke(scheduler: &Arc<Scheduler>, request: proto::InvokeRequest) -> Result<proto::InvokeResponse, Error> {
    let id = Some(request.workflow_id).filter(|id| !id.is_empty());
    let (row, deduplicated) = scheduler.invoke(&request.workflow, &request.input_json, id, request.r#async).await?;
    Ok(proto::InvokeResponse { workflow: Some(to_proto(row)), deduplicated })
}

#[tonic::async_trait]
impl Comb for Service {
    async fn execute_sql(&self, request: Request<proto::ExecuteSqlRequest>) -> Result<Response<proto::ExecuteSqlResponse>, Status> {
        let sql = request.into_inner().sql;
        let lsn = crate::server::execute_user_ddl(&self.scheduler.engine, &sql).await?;
        Ok(Response::new(proto::ExecuteSqlResponse { lsn }))
    }

    async fn register_function(&self, request: Request<proto::RegisterFunctionRequest>) -> Result<Response<proto::RegisterFunctionResponse>, Status> {
        let request = request.into_inner();
        if request.statements.is_empty() {
            return Err(Error::InvalidArgument { field: "statements", message: format!("function {} has no statements", request.name) }.into());
        }
        let definition = SqlFunction {
            name: request.name,
            statements: request.statements.into_iter().map(|s| SqlStatement { name: s.name, sql: s.sql, params: s.params }).collect(),
            partition_by: Some(request.partition_by).filter(|p| !p.is_empty()),
        };
        let read_only = self.scheduler.register_function(definition).await?;
        Ok(Response::new(proto::RegisterFunctionResponse { read_only }))
    }

    async fn register_workflow(&self, request: Request<proto::RegisterWorkflowRequest>) -> Result<Response<proto::RegisterWorkflowResponse>, Status> {
        let (version, plan) = self.scheduler.register_workflow(&request.into_inner().spec_json).await?;
        Ok(Response::new(proto::RegisterWorkflowResponse {
            name: plan.spec.name.clone(),
            version: version as u64,
            recorded_steps: plan.recorded.iter().cloned().collect(),
            units: plan.units.iter().map(|u| u.join("+")).collect(),
        }))
    }

    async fn invoke(&self, request: Request<proto::InvokeRequest>) -> Result<Response<proto::InvokeResponse>, Status> {
        Ok(Response::new(invoke(&self.scheduler, request.into_inner()).await?))
    }

    type InvokeStreamStream = InvokeStream;

    async fn invoke_stream(&self, request: Request<Streaming<proto::InvokeCalls>>) -> Result<Response<InvokeStream>, Status> {
        Ok(Response::new(InvokeStream::new(Arc::clone(&self.scheduler), request.into_inner(), self.closing.clone())))
    }

    async fn get_workflow(&self, request: Request<proto::GetWorkflowRequest>) -> Result<Response<proto::GetWorkflowResponse>, Status> {
        let request = request.into_inner();
        if request.workflow_id.is_empty() {
            return Err(Error::InvalidArgument { field: "workflow_id", message: "it is empty".to_owned() }.into());
        }
        let row = self.scheduler.get(&request.workflow_id, request.wait).await?;
        Ok(Response::new(proto::GetWorkflowResponse { workflow: Some(to_proto(row)) }))
    }

    async fn list_workflows(&self, request: Request<proto::ListWorkflowsRequest>) -> Result<Response<proto::ListWorkflowsResponse>, Status> {
        let request = request.into_inner();
        let status = match proto::WorkflowStatus::try_from(request.status) {
            Ok(proto::WorkflowStatus::Unspecified) => "",
            Ok(proto::WorkflowStatus::Running) => RUNNING,
            Ok(proto::WorkflowStatus::Succeeded) => SUCCEEDED,
            Ok(proto::WorkflowStatus::Failed) => FAILED,
            Err(_) => return Err(Error::InvalidArgument { field: "status", message: format!("{} is not a workflow status", request.status) }.into()),
        };
        let (rows, next) = self.scheduler.list(&request.name, status, request.page_size as usize, &request.page_token).await?;
        Ok(Response::new(proto::ListWorkflowsResponse { workflows: rows.into_iter().map(to_proto).collect(), next_page_token: next.unwrap_or_default() }))
    }

    async fn query_traces(&self, request: Request<proto::QueryTracesRequest>) -> Result<Response<proto::QueryTracesResponse>, Status> {
        let request = request.into_inner();
        if request.sql.trim().is_empty() {
            return Err(Error::InvalidArgument { field: "sql", message: "it is empty".to_owned() }.into());
        }
        let tracer = self.tracer.as_ref().ok_or(Error::TracingDisabled)?;
        let answer = tracer.query(&request.sql, request.catch_up).await.map_err(Error::from)?;
        Ok(Response::new(trace_answer(answer, TRACE_ANSWER_BYTES_MAX)?))
    }

    async fn health(&self, _request: Request<proto::HealthRequest>) -> Result<Response<proto::HealthResponse>, Status> {
        let engine = &self.scheduler.engine;
        let (files, merges) = self.tracer.as_ref().map_or((0, 0), |t| t.files_and_merges());
        let log = engine.log().stats();
        Ok(Response::new(proto::HealthResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            partitions: u32::from(engine.partitions()),
            log_tail: engine.log().tail(),
            workflows_in_flight: self.scheduler.in_flight() as u64,
            traced_lsn: self.tracer.as_ref().map_or(0, |t| t.consumed()),
            trace_files: files as u64,
            trace_merges: merges,
            log_io_over_10ms: log.io_over_10ms,
            log_io_us_max: log.io_us_max,
            trace_flush_failures: self.tracer.as_ref().map_or(0, |t| t.flush_failures()),
            executor_step_ms_now_max: engine.steps_in_progress(Duration::ZERO).iter().map(|s| s.running.as_millis() as u64).max().unwrap_or(0),
        }))
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use serde_json::json;

    use super::*;

    fn answer(columns: usize, rows: usize) -> comb_tracing::QueryResult {
        comb_tracing::QueryResult { columns: (0..columns).map(|c| format!("c{c}")).collect(), rows: vec![vec![json!(1)]; rows], truncated: false }
    }

    /// Rows of three bytes of JSON take five encoded: a cut by their text alone would let
    /// the answer grow past the bound (and past the gRPC message bound set from it).
    #[test]
    fn a_trace_answer_is_cut_at_its_encoded_size() {
        let reply = trace_answer(answer(1, 1_000), 1_000).unwrap();
        assert!(reply.truncated, "a thousand rows do not fit in 1,000 bytes");
        let encoded = reply.encoded_len();
        assert!(encoded <= 1_000 && encoded > 1_000 - 5, "{encoded} bytes for {} rows", reply.rows_json.len());

        let whole = trace_answer(answer(1, 10), 1_000).unwrap();
        assert_eq!((whole.rows_json.len(), whole.truncated), (10, false), "ten rows fit");
        assert_eq!(whole.rows_json[0], "[1]");
    }

    #[test]
    fn columns_beyond_the_answer_size_are_refused_by_name() {
        let err = trace_answer(answer(500, 0), 1_000).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { field: "sql", .. }), "{err:?}");
        assert!(err.to_string().contains("500 column names"), "{err}");
    }
}
