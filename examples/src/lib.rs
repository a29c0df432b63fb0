//! Comb's example applications, after the workloads of Apiary's evaluation: each is its
//! tables (DDL with `IF NOT EXISTS`), its compiled-in functions and its workflows. The stock
//! `comb` binary serves them, so they can be used without writing Rust.

use comb_backend::Function;
use comb_frontend::ServerBuilder;

pub mod counter;
pub mod hotel;
pub mod retwis;
pub mod shop;

/// One example application.
#[derive(Debug, Clone)]
pub struct App {
    /// Its name.
    pub name: &'static str,
    /// Its tables.
    pub schema: &'static str,
    /// Its functions.
    pub functions: fn() -> Vec<Function>,
    /// Its workflows (JSON specifications).
    pub workflows: &'static [&'static str],
}

impl App {
    /// Adds the application to a server being built.
    pub fn install(&self, mut builder: ServerBuilder) -> ServerBuilder {
        builder = builder.schema(self.schema);
        for function in (self.functions)() {
            builder = builder.function(function);
        }
        for workflow in self.workflows {
            builder = builder.workflow(*workflow);
        }
        builder
    }
}

/// Every example application.
pub const APPS: [App; 4] = [counter::APP, hotel::APP, shop::APP, retwis::APP];

/// The application with this name.
pub fn app(name: &str) -> Option<&'static App> {
    APPS.iter().find(|a| a.name == name)
}

/// An input field as an integer, or an error naming it.
pub(crate) fn int(input: &serde_json::Value, field: &str) -> Result<i64, comb_backend::BoxError> {
    input.get(field).and_then(serde_json::Value::as_i64).ok_or_else(|| format!("input field {field:?} must be an integer").into())
}
