//! A typed view of one sled tree: string keys, JSON values.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::StoreError;

/// A tree of `T` records keyed by string.
pub struct Table<T> {
    name: &'static str,
    tree: sled::Tree,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Table<T> {
    fn clone(&self) -> Self {
        Table {
            name: self.name,
            tree: self.tree.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Table<T> {
    pub(super) fn new(name: &'static str, tree: sled::Tree) -> Table<T> {
        Table {
            name,
            tree,
            _t: PhantomData,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn get(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.get(key)? {
            Some(v) => decode(self.name, key, &v).map(Some),
            None => Ok(None),
        }
    }

    pub fn contains(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.tree.contains_key(key)?)
    }

    pub fn put(&self, key: &str, value: &T) -> Result<(), StoreError> {
        self.tree.insert(key, encode(value))?;
        Ok(())
    }

    pub fn remove(&self, key: &str) -> Result<Option<T>, StoreError> {
        match self.tree.remove(key)? {
            Some(v) => decode(self.name, key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Every record, in key order.
    pub fn list(&self) -> Result<Vec<(String, T)>, StoreError> {
        self.scan_prefix("")
    }

    /// Every record without its key, in key order.
    pub fn values(&self) -> Result<Vec<T>, StoreError> {
        Ok(self.list()?.into_iter().map(|(_, v)| v).collect())
    }

    /// Records whose key starts with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.tree
            .scan_prefix(prefix)
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let value = decode(self.name, &key, &v)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Records whose key is `start` or after it, in key order.
    pub fn scan_from(&self, start: &str) -> Result<Vec<(String, T)>, StoreError> {
        self.tree
            .range(start..)
            .map(|kv| {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                let value = decode(self.name, &key, &v)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Last record (by key) whose key starts with `prefix`.
    pub fn last_with_prefix(&self, prefix: &str) -> Result<Option<(String, T)>, StoreError> {
        match self.tree.scan_prefix(prefix).next_back() {
            Some(kv) => {
                let (k, v) = kv?;
                let key = String::from_utf8_lossy(&k).into_owned();
                Ok(Some((key.clone(), decode(self.name, &key, &v)?)))
            }
            None => Ok(None),
        }
    }

    pub fn len(&self) -> usize {
        self.tree.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// Read-modify-write of one record with compare-and-swap, retried on
    /// conflict. `f` gets the current value and returns the new one (`None`
    /// deletes) or an error that aborts without writing.
    pub fn update<E>(
        &self,
        key: &str,
        mut f: impl FnMut(Option<T>) -> Result<Option<T>, E>,
    ) -> Result<Result<Option<T>, E>, StoreError> {
        loop {
            let old_raw = self.tree.get(key)?;
            let old = match &old_raw {
                Some(v) => Some(decode(self.name, key, v)?),
                None => None,
            };
            let new = match f(old) {
                Ok(new) => new,
                Err(e) => return Ok(Err(e)),
            };
            let new_raw = new.as_ref().map(encode);
            match self.tree.compare_and_swap(key, old_raw, new_raw)? {
                Ok(()) => return Ok(Ok(new)),
                Err(_) => continue,
            }
        }
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("store records serialize")
}

fn decode<T: DeserializeOwned>(
    table: &'static str,
    key: &str,
    raw: &[u8],
) -> Result<T, StoreError> {
    serde_json::from_slice(raw).map_err(|source| StoreError::Corrupt {
        table,
        key: key.to_string(),
        source,
    })
}
