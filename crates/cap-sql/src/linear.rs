//! Linear-time `instr` and `replace` for functions' connections.
//!
//! SQLite checks its deadline (progress handler, interrupt) only between virtual-machine
//! steps, and one call of a built-in function is one step. Its `instr` and `replace` compare
//! the pattern at every position, so a multi-megabyte haystack and pattern keep a core busy
//! for minutes past the function's timeout. These replacements search with the two-way
//! algorithm (`memchr::memmem`, linear in the input) and otherwise behave as SQLite's.

use memchr::memmem;
use rusqlite::Connection;
use rusqlite::functions::{Context, FunctionFlags};
use rusqlite::types::ValueRef;

/// Registers the overrides on `conn`.
pub(crate) fn install(conn: &Connection) -> rusqlite::Result<()> {
    let flags = FunctionFlags::SQLITE_UTF8
        | FunctionFlags::SQLITE_DETERMINISTIC
        | FunctionFlags::SQLITE_INNOCUOUS;
    conn.create_scalar_function("instr", 2, flags, instr)?;
    conn.create_scalar_function("replace", 3, flags, replace)?;
    Ok(())
}

/// The bytes SQLite would use as text for a value; `None` for NULL. Reals are written in
/// Rust's shortest form with a decimal point (SQLite prints 15 significant digits, so the
/// two differ only for reals with more digits or large exponents).
fn text(value: ValueRef<'_>) -> Option<Vec<u8>> {
    match value {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string().into_bytes()),
        ValueRef::Real(r) => {
            let mut s = r.to_string();
            if r.is_finite() && !s.contains(['.', 'e']) {
                s.push_str(".0");
            }
            Some(s.into_bytes())
        }
        ValueRef::Text(t) | ValueRef::Blob(t) => Some(t.to_vec()),
    }
}

fn instr(ctx: &Context<'_>) -> rusqlite::Result<Option<i64>> {
    let (haystack, needle) = (ctx.get_raw(0), ctx.get_raw(1));
    let both_blobs = matches!((haystack, needle), (ValueRef::Blob(_), ValueRef::Blob(_)));
    let (Some(haystack), Some(needle)) = (text(haystack), text(needle)) else {
        return Ok(None);
    };
    let Some(at) = memmem::find(&haystack, &needle) else {
        return Ok(Some(0));
    };
    if both_blobs {
        return Ok(Some(at as i64 + 1));
    }
    // Text positions count characters: the UTF-8 lead bytes before the match.
    let chars = haystack[..at]
        .iter()
        .filter(|b| (**b & 0xC0) != 0x80)
        .count();
    Ok(Some(chars as i64 + 1))
}

fn replace(ctx: &Context<'_>) -> rusqlite::Result<Option<String>> {
    let Some(subject) = text(ctx.get_raw(0)) else {
        return Ok(None);
    };
    let Some(pattern) = text(ctx.get_raw(1)) else {
        return Ok(None);
    };
    if pattern.is_empty() {
        return Ok(Some(String::from_utf8_lossy(&subject).into_owned()));
    }
    let Some(replacement) = text(ctx.get_raw(2)) else {
        return Ok(None);
    };
    let mut out = Vec::with_capacity(subject.len());
    let mut last = 0;
    for at in memmem::find_iter(&subject, &pattern) {
        out.extend_from_slice(&subject[last..at]);
        out.extend_from_slice(&replacement);
        last = at + pattern.len();
        if out.len() > crate::MAX_VALUE_BYTES as usize {
            return Err(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_TOOBIG),
                Some("string or blob too big".into()),
            ));
        }
    }
    out.extend_from_slice(&subject[last..]);
    Ok(Some(String::from_utf8_lossy(&out).into_owned()))
}
