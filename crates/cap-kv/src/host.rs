//! The wasmtime host side of `wasi:keyvalue` (store, atomics, batch).
//!
//! Each operation runs on a blocking thread: the store is a SQLite file behind one lock per
//! environment, and a slow disk or a busy neighbour must never hold an executor thread
//! away from other requests.

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::{FunctionKv, KvError};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasi:keyvalue/imports",
        imports: { default: async },
        with: {
            "wasi:keyvalue/store.bucket": crate::Bucket,
        },
    });
}

use generated::wasi::keyvalue::{atomics, batch, store};

/// An open bucket: the environment's one store, seen through the function's grants.
pub struct Bucket;

/// One invocation's key-value access; `None` when the node gives the function no store.
pub struct KvHost {
    kv: Option<Arc<FunctionKv>>,
}

impl KvHost {
    /// Key-value access for one invocation.
    pub fn new(kv: Option<Arc<FunctionKv>>) -> KvHost {
        KvHost { kv }
    }
}

/// What the bindings need from the store's data: the host and the resource table.
pub struct KvView<'a> {
    /// The invocation's key-value access.
    pub host: &'a KvHost,
    /// The instance's resource table.
    pub table: &'a mut ResourceTable,
}

impl KvView<'_> {
    fn access(&self) -> Result<Arc<FunctionKv>, store::Error> {
        self.host.kv.clone().ok_or_else(|| {
            store::Error::Other("key-value storage is not available on this node".into())
        })
    }

    /// Checks the bucket handle and returns the access to run an operation with.
    fn for_bucket(&self, bucket: &Resource<Bucket>) -> Result<Arc<FunctionKv>, store::Error> {
        self.table
            .get(bucket)
            .map_err(|err| store::Error::Other(err.to_string()))?;
        self.access()
    }
}

/// Runs `op` on a blocking thread.
async fn blocking<R: Send + 'static>(
    kv: Arc<FunctionKv>,
    op: impl FnOnce(&FunctionKv) -> Result<R, KvError> + Send + 'static,
) -> Result<R, store::Error> {
    tokio::task::spawn_blocking(move || op(&kv))
        .await
        .map_err(|err| store::Error::Other(format!("the operation did not finish: {err}")))?
        .map_err(to_wit)
}

fn to_wit(err: KvError) -> store::Error {
    match err {
        KvError::Denied(_) => store::Error::AccessDenied,
        KvError::Invalid(message) | KvError::Store(message) => store::Error::Other(message),
    }
}

impl store::Host for KvView<'_> {
    async fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
        self.access()?;
        match identifier.as_str() {
            "" | "default" => self
                .table
                .push(Bucket)
                .map_err(|err| store::Error::Other(err.to_string())),
            _ => Err(store::Error::NoSuchStore),
        }
    }
}

impl store::HostBucket for KvView<'_> {
    async fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| kv.get(&key)).await
    }

    async fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| kv.set(&key, &value)).await
    }

    async fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| kv.delete(&key)).await
    }

    async fn exists(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<bool, store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| kv.exists(&key)).await
    }

    async fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        let (keys, cursor) = blocking(self.for_bucket(&bucket)?, move |kv| {
            kv.list_keys(cursor.unwrap_or(0))
        })
        .await?;
        Ok(store::KeyResponse { keys, cursor })
    }

    async fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    async fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| {
            kv.increment(&key, delta)
        })
        .await
    }
}

impl batch::Host for KvView<'_> {
    async fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| kv.get_many(&keys)).await
    }

    async fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| {
            kv.set_many(&key_values)
        })
        .await
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        blocking(self.for_bucket(&bucket)?, move |kv| kv.delete_many(&keys)).await
    }
}

struct HasKv;

impl HasData for HasKv {
    type Data<'a> = KvView<'a>;
}

/// Adds `wasi:keyvalue/{store,atomics,batch}` to `linker`.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> KvView<'_>,
) -> wasmtime::Result<()> {
    store::add_to_linker::<T, HasKv>(linker, view)?;
    atomics::add_to_linker::<T, HasKv>(linker, view)?;
    batch::add_to_linker::<T, HasKv>(linker, view)?;
    Ok(())
}
