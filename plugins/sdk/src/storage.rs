//! Object storage configured by the host from the sink's table (credentials stay in the host).

pub use crate::bindings::host::runner::plugin::storage::{
    Entry, ListPage, Reader, Writer, check, delete, list, max_object_size, open_reader,
    open_writer, stat,
};
