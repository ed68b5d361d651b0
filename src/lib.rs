//! Paperboy
