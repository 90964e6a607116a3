//! The wasmtime host side of `wasi:keyvalue` (store, atomics, batch).

use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource, ResourceTable};

use crate::{FunctionKv, KvError};

mod generated {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "wasi:keyvalue/imports",
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
    fn access(&self) -> Result<&FunctionKv, store::Error> {
        self.host.kv.as_deref().ok_or_else(|| {
            store::Error::Other("key-value storage is not available on this node".into())
        })
    }

    fn check_bucket(&self, bucket: &Resource<Bucket>) -> Result<(), store::Error> {
        self.table
            .get(bucket)
            .map(drop)
            .map_err(|err| store::Error::Other(err.to_string()))
    }
}

fn to_wit(err: KvError) -> store::Error {
    match err {
        KvError::Denied(_) => store::Error::AccessDenied,
        KvError::Invalid(message) | KvError::Store(message) => store::Error::Other(message),
    }
}

impl store::Host for KvView<'_> {
    fn open(&mut self, identifier: String) -> Result<Resource<Bucket>, store::Error> {
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
    fn get(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
    ) -> Result<Option<Vec<u8>>, store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.get(&key).map_err(to_wit)
    }

    fn set(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.set(&key, &value).map_err(to_wit)
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Result<(), store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.delete(&key).map_err(to_wit)
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Result<bool, store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.exists(&key).map_err(to_wit)
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<u64>,
    ) -> Result<store::KeyResponse, store::Error> {
        self.check_bucket(&bucket)?;
        let (keys, cursor) = self
            .access()?
            .list_keys(cursor.unwrap_or(0))
            .map_err(to_wit)?;
        Ok(store::KeyResponse { keys, cursor })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for KvView<'_> {
    fn increment(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        delta: u64,
    ) -> Result<u64, store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.increment(&key, delta).map_err(to_wit)
    }
}

impl batch::Host for KvView<'_> {
    fn get_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<Vec<Option<(String, Vec<u8>)>>, store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.get_many(&keys).map_err(to_wit)
    }

    fn set_many(
        &mut self,
        bucket: Resource<Bucket>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> Result<(), store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.set_many(&key_values).map_err(to_wit)
    }

    fn delete_many(
        &mut self,
        bucket: Resource<Bucket>,
        keys: Vec<String>,
    ) -> Result<(), store::Error> {
        self.check_bucket(&bucket)?;
        self.access()?.delete_many(&keys).map_err(to_wit)
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
