//! The embedded Lua 5.1 that runs our scripts unmodified, with the parts of Redis' scripting
//! environment they rely on: KEYS, ARGV, redis.call / redis.pcall and the type conversions,
//! redis.error_reply / redis.status_reply, the error format of Redis 7.0 and its read-only
//! globals.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table};

use crate::commands::{self, Lookup, Store};
use crate::numbers::format_g17;
use crate::value::Value;

/// The chunk name Redis 7 compiles scripts under: it shows in error messages
/// (`user_script:3: attempt to ...`).
const CHUNK: &str = "@user_script";

/// SHA1 hex of a script body, the key of the script cache (lower case, as Redis prints it).
pub fn sha1_hex(source: &[u8]) -> String {
    sha1_smol::Sha1::from(source).digest().to_string()
}

/// One Lua interpreter and the scripts compiled in it.
pub struct LuaEngine {
    store: Rc<RefCell<Store>>,
    lua: Lua,
    run: Function,
    scripts: HashMap<String, Function>,
}

impl LuaEngine {
    /// A fresh interpreter whose redis.call acts on `store`.
    pub fn new(store: Rc<RefCell<Store>>) -> LuaEngine {
        let (lua, run) = new_interpreter(store.clone()).expect("the scripting environment builds");
        LuaEngine {
            store,
            lua,
            run,
            scripts: HashMap::new(),
        }
    }

    /// Compiles and caches a script (SCRIPT LOAD, and EVAL before it runs); returns its sha.
    /// A compile error is the reply Redis 7.0 gives.
    pub fn load(&mut self, source: &[u8]) -> Result<String, Value> {
        let sha = sha1_hex(source);
        if !self.scripts.contains_key(&sha) {
            let function = self
                .lua
                .load(source)
                .set_name(CHUNK)
                .into_function()
                .map_err(|e| {
                    Value::err(format!(
                        "Error compiling script (new function): {}",
                        lua_message(&e)
                    ))
                })?;
            self.scripts.insert(sha.clone(), function);
        }
        Ok(sha)
    }

    /// Whether a script is cached (SCRIPT EXISTS, EVALSHA).
    pub fn exists(&self, sha: &str) -> bool {
        self.scripts.contains_key(sha)
    }

    /// Drops every script and the interpreter with them, as SCRIPT FLUSH and a restart do:
    /// Redis builds a new Lua state, so nothing a script left behind survives either.
    pub fn flush(&mut self) {
        *self = LuaEngine::new(self.store.clone());
    }

    /// Runs a cached script with KEYS and ARGV set. The caller checked that `sha` exists.
    pub fn run(&mut self, sha: &str, keys: &[Vec<u8>], argv: &[Vec<u8>]) -> Value {
        let function = self
            .scripts
            .get(sha)
            .expect("caller checked the script cache")
            .clone();
        match self.call(&function, keys, argv) {
            Ok(Ok(reply)) => reply,
            Ok(Err((message, line))) => {
                Value::Error(format!("{message} script: {sha}, on {CHUNK}:{line}."))
            }
            Err(e) => Value::err(format!("redquorum-sim internal Lua error: {e}")),
        }
    }

    /// Runs `function` under the error handler; the inner `Err` is a script error (the message
    /// and the script line it was raised on), the outer one a failure of the simulator itself.
    fn call(
        &self,
        function: &Function,
        keys: &[Vec<u8>],
        argv: &[Vec<u8>],
    ) -> mlua::Result<Result<Value, (String, i64)>> {
        let globals = self.lua.globals();
        // rawset: the globals are read-only to scripts, as in Redis 7.0.
        globals.raw_set("KEYS", self.string_array(keys)?)?;
        globals.raw_set("ARGV", self.string_array(argv)?)?;
        let mut results: MultiValue = self.run.call(function.clone())?;
        let ok = matches!(results.pop_front(), Some(mlua::Value::Boolean(true)));
        let first = results.pop_front().unwrap_or(mlua::Value::Nil);
        if ok {
            return Ok(Ok(lua_to_reply(&first)));
        }
        // The handler always returns {err = message, line = n}.
        let table = match first {
            mlua::Value::Table(t) => t,
            other => return Ok(Err((format!("ERR {other:?}"), 0))),
        };
        let message: Option<String> = table.raw_get("err")?;
        let line: Option<i64> = table.raw_get("line")?;
        Ok(Err((
            message.unwrap_or_else(|| "ERR unknown error".into()),
            line.unwrap_or(0),
        )))
    }

    fn string_array(&self, items: &[Vec<u8>]) -> mlua::Result<Table> {
        let table = self.lua.create_table_with_capacity(items.len(), 0)?;
        for (i, item) in items.iter().enumerate() {
            table.raw_set(i + 1, self.lua.create_string(item)?)?;
        }
        Ok(table)
    }
}

/// The text of a Lua error without mlua's traceback.
fn lua_message(e: &mlua::Error) -> String {
    let text = match e {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::RuntimeError(message) => message.clone(),
        other => other.to_string(),
    };
    text.split("\nstack traceback:")
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Builds an interpreter with Redis' libraries and the `redis` table, and returns it with the
/// runner (a protected call under Redis' error handler).
fn new_interpreter(store: Rc<RefCell<Store>>) -> mlua::Result<(Lua, Function)> {
    // Redis loads base, table, string and math (plus cjson, struct, cmsgpack, bit and debug,
    // which our scripts do not use); no io, os or package.
    let lua = Lua::new_with(
        StdLib::TABLE | StdLib::STRING | StdLib::MATH,
        LuaOptions::default(),
    )?;
    let globals = lua.globals();
    // Redis removes these two from the base library.
    globals.raw_set("loadfile", mlua::Value::Nil)?;
    globals.raw_set("dofile", mlua::Value::Nil)?;

    let redis = lua.create_table()?;
    let pcall_store = store.clone();
    let pcall = lua.create_function(move |lua, args: MultiValue| {
        let reply = script_command(&mut pcall_store.borrow_mut(), &args);
        reply_to_lua(lua, &reply)
    })?;
    redis.raw_set("pcall", pcall)?;
    redis.raw_set(
        "error_reply",
        lua.create_function(|lua, message: mlua::String| {
            // Redis prefixes "ERR " when the text has no error code (no space after a code).
            let text = message.to_string_lossy();
            let text = text.strip_prefix('-').unwrap_or(&text);
            let full = if text.contains(' ') {
                text.to_owned()
            } else {
                format!("ERR {text}")
            };
            lua.create_table_from([("err", full)])
        })?,
    )?;
    redis.raw_set(
        "status_reply",
        lua.create_function(|lua, message: mlua::String| lua.create_table_from([("ok", message)]))?,
    )?;
    redis.raw_set(
        "sha1hex",
        lua.create_function(|_, text: mlua::String| Ok(sha1_hex(&text.as_bytes())))?,
    )?;

    let call_store = store.clone();
    let call = lua.create_function(move |lua, args: MultiValue| {
        match script_command(&mut call_store.borrow_mut(), &args) {
            // Raised as a Rust error carrying the message and the script line; the handler
            // turns it back into Redis' error table. redis.call must be a C function, not a
            // Lua wrapper: `return redis.call(...)` is a tail call, and Lua 5.1 drops the
            // script's frame for a Lua callee (not for a C one), losing the line.
            Value::Error(message) => Err(mlua::Error::external(CallError {
                message,
                line: script_line(lua),
            })),
            reply => reply_to_lua(lua, &reply),
        }
    })?;
    redis.raw_set("call", call)?;
    globals.raw_set("redis", redis)?;

    // Redis' error handler: the error becomes {err = message} ("ERR " before a plain string)
    // with the line of the script it was raised on.
    let handler = lua.create_function(|lua, err: mlua::Value| {
        let result = lua.create_table()?;
        let mut line = script_line(lua);
        match err {
            mlua::Value::Table(t) => result.raw_set("err", t.raw_get::<mlua::Value>("err")?)?,
            mlua::Value::String(s) => {
                result.raw_set("err", format!("ERR {}", s.to_string_lossy()))?
            }
            mlua::Value::Error(e) => match e.chain().find_map(|c| c.downcast_ref::<CallError>()) {
                Some(call) => {
                    result.raw_set("err", call.message.as_str())?;
                    line = call.line;
                }
                None => result.raw_set("err", format!("ERR {}", lua_message(&e)))?,
            },
            other => result.raw_set("err", format!("ERR {other:?}"))?,
        }
        result.raw_set("line", line)?;
        Ok(result)
    })?;

    let prelude = lua
        .load(
            r#"
            local handler = ...
            local xpcall, error = xpcall, error
            -- Redis 7.0 makes the globals read-only and reading an undefined one an error.
            setmetatable(_G, {
              __index = function(_, name)
                error("Script attempted to access nonexistent global variable '" .. tostring(name) .. "'", 2)
              end,
              __newindex = function()
                error("Attempt to modify a readonly table", 2)
              end,
            })
            return function(f)
              return xpcall(f, handler)
            end
            "#,
        )
        .set_name("=redquorum_sim")
        .into_function()?;
    let run: Function = prelude.call(handler)?;
    Ok((lua, run))
}

/// An error reply raised by redis.call, with the script line of the call.
#[derive(Debug)]
struct CallError {
    message: String,
    line: i64,
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for CallError {}

/// The current line of the innermost running function of the script itself (the chunk named
/// `@user_script`), which is what Redis' handler reports: it skips the C function that raised
/// (error, redis.call) to reach the script's frame.
fn script_line(lua: &Lua) -> i64 {
    for level in 0.. {
        let found = lua.inspect_stack(level, |debug| {
            (debug.source().source.as_deref() == Some(CHUNK)).then(|| debug.current_line())
        });
        match found {
            None => break,
            Some(Some(line)) => return line.map_or(0, |l| l as i64),
            Some(None) => {}
        }
    }
    0
}

/// Runs one redis.call / redis.pcall: converts the arguments, checks the command, runs it.
/// Errors come back as error replies; redis.call raises them.
fn script_command(store: &mut Store, args: &MultiValue) -> Value {
    if args.is_empty() {
        return Value::err("Please specify at least one argument for this redis lib call");
    }
    let mut argv = Vec::with_capacity(args.len());
    for arg in args {
        match arg {
            mlua::Value::String(s) => argv.push(s.as_bytes().to_vec()),
            // Redis 7.0 turns numbers into text with "%.17g".
            mlua::Value::Integer(i) => argv.push(i.to_string().into_bytes()),
            mlua::Value::Number(n) => argv.push(format_g17(*n).into_bytes()),
            _ => return Value::err("Lua redis lib command arguments must be strings or integers"),
        }
    }
    let name = String::from_utf8_lossy(&argv[0]).to_ascii_lowercase();
    match commands::lookup(&name, argv.len()) {
        Lookup::Ok => commands::run(store, &name, &argv),
        Lookup::WrongArity => Value::err("Wrong number of args calling Redis command from script"),
        Lookup::Unknown => match name.as_str() {
            "eval" | "evalsha" | "script" | "multi" | "exec" | "subscribe" => {
                Value::err("This Redis command is not allowed from script")
            }
            "info" | "config" | "flushall" => {
                Value::err("this command is not modelled inside scripts by redquorum-sim")
            }
            _ => Value::err("Unknown Redis command called from script"),
        },
    }
}

/// Redis reply -> Lua value, as redis.call returns it: integer -> number, bulk -> string,
/// nil -> false, array -> table, status -> {ok=...}, error -> {err=...}.
fn reply_to_lua(lua: &Lua, reply: &Value) -> mlua::Result<mlua::Value> {
    Ok(match reply {
        Value::Nil => mlua::Value::Boolean(false),
        Value::Int(i) => mlua::Value::Number(*i as f64),
        Value::Bulk(b) => mlua::Value::String(lua.create_string(b)?),
        Value::Status(s) => mlua::Value::Table(lua.create_table_from([("ok", s.as_str())])?),
        Value::Error(e) => mlua::Value::Table(lua.create_table_from([("err", e.as_str())])?),
        Value::Array(items) => {
            let table = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.iter().enumerate() {
                table.raw_set(i + 1, reply_to_lua(lua, item)?)?;
            }
            mlua::Value::Table(table)
        }
    })
}

/// Lua value -> Redis reply, as a script's return value is sent: number -> integer
/// (truncated), string -> bulk, false/nil -> nil, true -> 1, {err=...} -> error,
/// {ok=...} -> status, other tables -> array up to the first nil.
fn lua_to_reply(value: &mlua::Value) -> Value {
    match value {
        mlua::Value::Boolean(true) => Value::Int(1),
        mlua::Value::Integer(i) => Value::Int(*i),
        // C's (long long) cast truncates toward zero.
        mlua::Value::Number(n) => Value::Int(*n as i64),
        mlua::Value::String(s) => Value::Bulk(s.as_bytes().to_vec()),
        mlua::Value::Table(t) => {
            if let Ok(mlua::Value::String(e)) = t.raw_get::<mlua::Value>("err") {
                // Sent as is, after any leading '-'.
                let text = e.to_string_lossy();
                return Value::Error(text.strip_prefix('-').unwrap_or(&text).to_owned());
            }
            if let Ok(mlua::Value::String(s)) = t.raw_get::<mlua::Value>("ok") {
                return Value::Status(s.to_string_lossy());
            }
            let mut items = Vec::new();
            for i in 1.. {
                match t.raw_get::<mlua::Value>(i) {
                    Ok(mlua::Value::Nil) | Err(_) => break,
                    Ok(item) => items.push(lua_to_reply(&item)),
                }
            }
            Value::Array(items)
        }
        _ => Value::Nil,
    }
}
