//! The wasmtime host side of `runway:platform/sql`.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasData, Linker};

use crate::{FunctionSql, SqlError, Value};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "runway:platform/sql-imports",
        imports: { default: async },
    });
}

use generated::runway::platform::sql;

/// One invocation's view of SQL: the release's access and the invocation's deadline.
pub struct SqlHost {
    sql: Option<Arc<FunctionSql>>,
    deadline: Instant,
}

impl SqlHost {
    /// SQL for an invocation that must finish by `deadline`; `None` when the node has no
    /// database for the function (every call then fails with a clear message).
    pub fn new(sql: Option<Arc<FunctionSql>>, deadline: Instant) -> SqlHost {
        SqlHost { sql, deadline }
    }

    /// Runs `call` on a blocking thread: statements may take as long as the function's
    /// timeout, and must not hold an executor thread away from other requests meanwhile.
    async fn run<R: Send + 'static>(
        &self,
        call: impl FnOnce(&FunctionSql, Instant) -> Result<R, SqlError> + Send + 'static,
    ) -> Result<R, sql::Error> {
        let Some(access) = self.sql.clone() else {
            return Err(sql::Error::Failed(
                "SQL is not available to this function on this node".into(),
            ));
        };
        let deadline = self.deadline;
        let outcome = tokio::task::spawn_blocking(move || call(&access, deadline)).await;
        match outcome {
            Ok(result) => result.map_err(|err| match err {
                SqlError::Denied(denied) => sql::Error::Denied(denied.to_string()),
                SqlError::Invalid(message) => sql::Error::Invalid(message),
                SqlError::Failed(message) => sql::Error::Failed(message),
            }),
            Err(join) => Err(sql::Error::Failed(format!(
                "the statement did not finish: {join}"
            ))),
        }
    }
}

fn from_wit(params: Vec<sql::Value>) -> Vec<Value> {
    params
        .into_iter()
        .map(|value| match value {
            sql::Value::Null => Value::Null,
            sql::Value::Integer(i) => Value::Integer(i),
            sql::Value::Real(r) => Value::Real(r),
            sql::Value::Text(t) => Value::Text(t),
            sql::Value::Blob(b) => Value::Blob(b),
        })
        .collect()
}

fn to_wit(value: Value) -> sql::Value {
    match value {
        Value::Null => sql::Value::Null,
        Value::Integer(i) => sql::Value::Integer(i),
        Value::Real(r) => sql::Value::Real(r),
        Value::Text(t) => sql::Value::Text(t),
        Value::Blob(b) => sql::Value::Blob(b),
    }
}

impl sql::Host for SqlHost {
    async fn query(
        &mut self,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<sql::Rows, sql::Error> {
        let params = from_wit(params);
        let rows = self
            .run(move |access, deadline| access.query(&statement, &params, deadline))
            .await?;
        Ok(sql::Rows {
            columns: rows.columns,
            rows: rows
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(to_wit).collect())
                .collect(),
        })
    }

    async fn execute(
        &mut self,
        statement: String,
        params: Vec<sql::Value>,
    ) -> Result<u64, sql::Error> {
        let params = from_wit(params);
        self.run(move |access, deadline| access.execute(&statement, &params, deadline))
            .await
    }
}

struct HasSql;

impl HasData for HasSql {
    type Data<'a> = &'a mut SqlHost;
}

/// Adds `runway:platform/sql` to `linker`; `host` finds the invocation's [`SqlHost`].
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    host: fn(&mut T) -> &mut SqlHost,
) -> wasmtime::Result<()> {
    sql::add_to_linker::<T, HasSql>(linker, host)
}
