//! A minimal PostgreSQL client over one TCP connection: startup and authentication (trust,
//! cleartext, md5, SCRAM-SHA-256), simple queries, and COPY out and in.

use std::io::{Read, Write};
use std::net::TcpStream;

use bytes::{BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::{md5_hash, sasl};
use postgres_protocol::message::{backend::Message, frontend};
use runner_sdk::{Error, Result};

/// Where and as whom to connect: `postgres://user@host:port/database`.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: Option<String>,
}

impl ConnInfo {
    /// Parses `postgres://user@host[:port]/database` (also `postgresql://`). A password in
    /// the URL is refused: it belongs in the `password` option, as a secret reference.
    pub fn parse(url: &str) -> std::result::Result<Self, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or("expected postgres://user@host:port/database")?;
        let (authority, database) = rest.split_once('/').unwrap_or((rest, ""));
        if database.contains(['?', '/', '#']) {
            return Err(
                "query parameters are not supported; write postgres://user@host:port/database"
                    .into(),
            );
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((user, hostport)) => (user, hostport),
            None => ("postgres", authority),
        };
        if user.contains(':') {
            return Err("put the password in the `password` option (a secret reference such as \"${env:PGPASSWORD}\"), not in the url".into());
        }
        let (host, port) = if let Some(inner) = hostport.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or("unclosed '[' in the host")?;
            (host, after.strip_prefix(':'))
        } else {
            match hostport.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err("the url names no host".into());
        }
        let port = match port {
            None => 5432,
            Some(p) => p
                .parse::<u16>()
                .map_err(|_| format!("invalid port {p:?}"))?,
        };
        let database = percent_decode(database)?;
        Ok(ConnInfo {
            host: host.to_string(),
            port,
            user: percent_decode(if user.is_empty() { "postgres" } else { user })?,
            database: if database.is_empty() {
                "postgres".into()
            } else {
                database
            },
            password: None,
        })
    }

    /// `host:port`, for messages.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn percent_decode(text: &str) -> std::result::Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .ok_or_else(|| format!("bad percent escape in {text:?}"))?;
            out.push(
                u8::from_str_radix(hex, 16)
                    .map_err(|_| format!("bad percent escape in {text:?}"))?,
            );
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{text:?} is not UTF-8 once decoded"))
}

/// An error the server reported.
#[derive(Debug)]
pub struct ServerError {
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl ServerError {
    pub fn to_error(&self, context: &str) -> Error {
        let mut text = format!("{context}: {} (SQLSTATE {})", self.message, self.code);
        if let Some(detail) = &self.detail {
            text.push_str(&format!("; {detail}"));
        }
        if let Some(hint) = &self.hint {
            text.push_str(&format!("; hint: {hint}"));
        }
        match self.code.as_str() {
            // invalid_authorization_specification, invalid_password, insufficient_privilege
            "28000" | "28P01" | "42501" => Error::AccessDenied(text),
            // database does not exist
            "3D000" => Error::NotFound(text),
            // connection exceptions, admin shutdown, cannot connect now, serialization failures
            c if c.starts_with("08") || c.starts_with("57P") || c == "40001" => {
                Error::retryable(text)
            }
            _ => Error::permanent(text),
        }
    }
}

/// Bytes asked of the socket per read: large, so a COPY costs few calls into the host.
const READ_SIZE: usize = 256 << 10;

/// Rows of a simple query, every value as text (None for NULL).
pub type Rows = Vec<Vec<Option<String>>>;

/// One open connection.
pub struct Conn {
    stream: TcpStream,
    input: BytesMut,
    output: BytesMut,
    /// `server_version` as the server announced it.
    pub server_version: String,
    address: String,
    /// A `COPY … TO STDOUT` is running: the connection is busy until its end.
    pub in_copy: bool,
    /// The server process serving this connection (`pg_backend_pid()`).
    pub backend_pid: i32,
}

/// Session settings that make COPY text and catalog output the same on every server setup.
const STARTUP_SETTINGS: &[(&str, &str)] = &[
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("application_name", "runner"),
];

impl Conn {
    /// Connects to `database` on `info`'s server and authenticates.
    pub fn connect(info: &ConnInfo, database: &str) -> Result<Conn> {
        let address = info.address();
        let stream = TcpStream::connect((info.host.as_str(), info.port)).map_err(|e| {
            let text = format!("cannot connect to PostgreSQL at {address}: {e}");
            match e.kind() {
                std::io::ErrorKind::PermissionDenied => Error::AccessDenied(format!(
                    "{text} (the stage may reach only the address of its `url`, or of the restore target)"
                )),
                _ => Error::retryable(text),
            }
        })?;
        let _ = stream.set_nodelay(true);
        let mut conn = Conn {
            stream,
            input: BytesMut::with_capacity(1 << 16),
            output: BytesMut::new(),
            server_version: String::new(),
            address,
            in_copy: false,
            backend_pid: 0,
        };
        let mut params: Vec<(&str, &str)> =
            vec![("user", info.user.as_str()), ("database", database)];
        params.extend_from_slice(STARTUP_SETTINGS);
        frontend::startup_message(params.iter().copied(), &mut conn.output)
            .map_err(Error::internal)?;
        conn.flush()?;
        conn.authenticate(info)?;
        loop {
            match conn.next()? {
                Message::ParameterStatus(p) => {
                    if p.name().ok() == Some("server_version") {
                        conn.server_version = p.value().unwrap_or_default().to_string();
                    }
                }
                Message::BackendKeyData(key) => conn.backend_pid = key.process_id(),
                Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => break,
                Message::ErrorResponse(e) => {
                    return Err(server_error(&e).to_error(&format!(
                        "PostgreSQL at {} refused the session",
                        conn.address
                    )));
                }
                _ => return Err(conn.unexpected("startup")),
            }
        }
        Ok(conn)
    }

    fn authenticate(&mut self, info: &ConnInfo) -> Result<()> {
        let who = format!("user {:?} at {}", info.user, self.address);
        let password = || {
            info.password.as_deref().ok_or_else(|| {
                Error::config_field("password", format!("the server asks a password for {who}; set `password` to a secret reference such as \"${{env:PGPASSWORD}}\""))
            })
        };
        loop {
            match self.next()? {
                Message::AuthenticationOk => return Ok(()),
                Message::AuthenticationCleartextPassword => {
                    frontend::password_message(password()?.as_bytes(), &mut self.output)
                        .map_err(Error::internal)?;
                    self.flush()?;
                }
                Message::AuthenticationMd5Password(body) => {
                    let hash = md5_hash(info.user.as_bytes(), password()?.as_bytes(), body.salt());
                    frontend::password_message(hash.as_bytes(), &mut self.output)
                        .map_err(Error::internal)?;
                    self.flush()?;
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = body.mechanisms();
                    let mut scram = false;
                    while let Some(m) = mechanisms.next().map_err(Error::corrupt)? {
                        scram |= m == sasl::SCRAM_SHA_256;
                    }
                    if !scram {
                        return Err(Error::unsupported(format!(
                            "{who}: the server offers no SASL mechanism this plugin speaks (SCRAM-SHA-256)"
                        )));
                    }
                    let mut scram = sasl::ScramSha256::new(
                        password()?.as_bytes(),
                        sasl::ChannelBinding::unsupported(),
                    );
                    frontend::sasl_initial_response(
                        sasl::SCRAM_SHA_256,
                        scram.message(),
                        &mut self.output,
                    )
                    .map_err(Error::internal)?;
                    self.flush()?;
                    match self.next()? {
                        Message::AuthenticationSaslContinue(body) => scram
                            .update(body.data())
                            .map_err(|e| Error::AccessDenied(format!("{who}: SCRAM: {e}")))?,
                        Message::ErrorResponse(e) => {
                            return Err(server_error(&e)
                                .to_error(&format!("authentication of {who} failed")));
                        }
                        _ => return Err(self.unexpected("SCRAM")),
                    }
                    frontend::sasl_response(scram.message(), &mut self.output)
                        .map_err(Error::internal)?;
                    self.flush()?;
                    match self.next()? {
                        Message::AuthenticationSaslFinal(body) => {
                            scram.finish(body.data()).map_err(|e| {
                                Error::AccessDenied(format!(
                                    "{who}: SCRAM: the server's proof is wrong: {e}"
                                ))
                            })?
                        }
                        Message::ErrorResponse(e) => {
                            return Err(server_error(&e)
                                .to_error(&format!("authentication of {who} failed")));
                        }
                        _ => return Err(self.unexpected("SCRAM")),
                    }
                }
                Message::ErrorResponse(e) => {
                    return Err(
                        server_error(&e).to_error(&format!("authentication of {who} failed"))
                    );
                }
                _ => {
                    return Err(Error::unsupported(format!(
                        "{who}: the server asks an authentication method this plugin does not speak (only trust, password, md5 and SCRAM-SHA-256)"
                    )));
                }
            }
        }
    }

    fn flush(&mut self) -> Result<()> {
        let address = &self.address;
        self.stream
            .write_all(&self.output)
            .map_err(|e| Error::retryable(format!("writing to PostgreSQL at {address}: {e}")))?;
        self.output.clear();
        Ok(())
    }

    fn next(&mut self) -> Result<Message> {
        loop {
            if let Some(message) = Message::parse(&mut self.input)
                .map_err(|e| Error::corrupt(format!("PostgreSQL at {}: {e}", self.address)))?
            {
                return Ok(message);
            }
            let start = self.input.len();
            self.input.resize(start + READ_SIZE, 0);
            let n = self.stream.read(&mut self.input[start..]);
            let n = match n {
                Ok(n) => n,
                Err(e) => {
                    self.input.truncate(start);
                    return Err(Error::retryable(format!(
                        "reading from PostgreSQL at {}: {e}",
                        self.address
                    )));
                }
            };
            self.input.truncate(start + n);
            if n == 0 {
                return Err(Error::retryable(format!(
                    "PostgreSQL at {} closed the connection",
                    self.address
                )));
            }
        }
    }

    fn unexpected(&self, during: &str) -> Error {
        Error::corrupt(format!(
            "PostgreSQL at {}: unexpected message during {during}",
            self.address
        ))
    }

    /// Skips to ReadyForQuery after an error, then returns the error.
    fn fail_after(&mut self, error: ServerError, context: &str) -> Error {
        loop {
            match self.next() {
                Ok(Message::ReadyForQuery(_)) => break,
                Ok(_) => {}
                Err(e) => return e,
            }
        }
        error.to_error(context)
    }

    /// Runs one or more statements; returns the rows of the last one that returned any.
    pub fn query(&mut self, sql: &str) -> Result<Rows> {
        match self.query_checked(sql)? {
            Ok(rows) => Ok(rows),
            Err(e) => Err(e.to_error(&format!(
                "PostgreSQL at {} failed `{}`",
                self.address,
                abbreviate(sql)
            ))),
        }
    }

    /// Runs statements; the outer error is the connection's, the inner one the server's.
    pub fn query_checked(&mut self, sql: &str) -> Result<std::result::Result<Rows, ServerError>> {
        self.send_query(sql)?;
        self.query_result()
    }

    /// Sends a query without waiting for its result: several sent in a row run one after
    /// the other on the server (each in its own transaction) while the client does other
    /// work; `query_result` then collects their results in order.
    pub fn send_query(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, &mut self.output).map_err(Error::internal)?;
        self.flush()
    }

    /// The result of the oldest query sent and not yet collected.
    pub fn query_result(&mut self) -> Result<std::result::Result<Rows, ServerError>> {
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            match self.next()? {
                Message::RowDescription(_) => rows.clear(),
                Message::DataRow(row) => {
                    let buffer = row.buffer();
                    let values: Vec<Option<String>> = row
                        .ranges()
                        .map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buffer[r]).into_owned())))
                        .collect()
                        .map_err(Error::corrupt)?;
                    rows.push(values);
                }
                Message::CommandComplete(_)
                | Message::EmptyQueryResponse
                | Message::NoticeResponse(_)
                | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(e) => failed = Some(server_error(&e)),
                Message::CopyInResponse(_) => {
                    frontend::copy_fail("unexpected COPY FROM STDIN", &mut self.output)
                        .map_err(Error::internal)?;
                    self.flush()?;
                }
                Message::CopyOutResponse(_) | Message::CopyData(_) | Message::CopyDone => {}
                Message::ReadyForQuery(_) => break,
                _ => return Err(self.unexpected("a query")),
            }
        }
        Ok(match failed {
            Some(e) => Err(e),
            None => Ok(rows),
        })
    }

    /// Runs statements that return no rows.
    pub fn execute(&mut self, sql: &str) -> Result<()> {
        self.query(sql).map(drop)
    }

    /// Starts `COPY … TO STDOUT`.
    pub fn copy_out(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, &mut self.output).map_err(Error::internal)?;
        self.flush()?;
        loop {
            match self.next()? {
                Message::CopyOutResponse(_) => {
                    self.in_copy = true;
                    return Ok(());
                }
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(e) => {
                    let e = server_error(&e);
                    return Err(
                        self.fail_after(e, &format!("PostgreSQL failed `{}`", abbreviate(sql)))
                    );
                }
                _ => return Err(self.unexpected("COPY TO")),
            }
        }
    }

    /// The next piece of a running `COPY … TO STDOUT`, or its end with the row count.
    pub fn copy_out_next(&mut self) -> Result<CopyOut> {
        loop {
            match self.next()? {
                Message::CopyData(data) => return Ok(CopyOut::Data(data.into_bytes())),
                Message::CopyDone | Message::NoticeResponse(_) => {}
                Message::CommandComplete(done) => {
                    let rows = done
                        .tag()
                        .ok()
                        .and_then(|t| t.strip_prefix("COPY "))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                    match self.next()? {
                        Message::ReadyForQuery(_) => {
                            self.in_copy = false;
                            return Ok(CopyOut::Done(rows));
                        }
                        _ => return Err(self.unexpected("the end of COPY TO")),
                    }
                }
                Message::ErrorResponse(e) => {
                    let e = server_error(&e);
                    return Err(self.fail_after(e, "PostgreSQL failed during COPY TO"));
                }
                _ => return Err(self.unexpected("COPY TO")),
            }
        }
    }

    /// Starts `COPY … FROM STDIN`.
    pub fn copy_in(&mut self, sql: &str) -> Result<()> {
        frontend::query(sql, &mut self.output).map_err(Error::internal)?;
        self.flush()?;
        loop {
            match self.next()? {
                Message::CopyInResponse(_) => return Ok(()),
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(e) => {
                    let e = server_error(&e);
                    return Err(
                        self.fail_after(e, &format!("PostgreSQL failed `{}`", abbreviate(sql)))
                    );
                }
                _ => return Err(self.unexpected("COPY FROM")),
            }
        }
    }

    /// Sends bytes of a running `COPY … FROM STDIN`.
    pub fn copy_in_data(&mut self, data: &[u8]) -> Result<()> {
        // A CopyData message written in place: tag, length (itself included), bytes.
        let length = i32::try_from(data.len() + 4)
            .map_err(|_| Error::invalid_input("a COPY chunk over 2 GiB"))?;
        self.output.put_u8(b'd');
        self.output.put_i32(length);
        self.output.extend_from_slice(data);
        if self.output.len() >= 1 << 18 {
            self.flush()?;
        }
        Ok(())
    }

    /// Ends a `COPY … FROM STDIN`; returns the rows the server loaded.
    pub fn copy_in_done(&mut self, what: &str) -> Result<u64> {
        frontend::copy_done(&mut self.output);
        self.flush()?;
        let mut rows = 0;
        let mut failed = None;
        loop {
            match self.next()? {
                Message::CommandComplete(done) => {
                    rows = done
                        .tag()
                        .ok()
                        .and_then(|t| t.strip_prefix("COPY "))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0);
                }
                Message::NoticeResponse(_) => {}
                Message::ErrorResponse(e) => failed = Some(server_error(&e)),
                Message::ReadyForQuery(_) => break,
                _ => return Err(self.unexpected("the end of COPY FROM")),
            }
        }
        match failed {
            Some(e) => Err(e.to_error(&format!("loading {what} failed"))),
            None => Ok(rows),
        }
    }

    /// Says goodbye; errors are irrelevant by then.
    pub fn close(mut self) {
        frontend::terminate(&mut self.output);
        let _ = self.flush();
    }
}

/// What `copy_out_next` produced.
pub enum CopyOut {
    Data(Bytes),
    /// The end, with the row count the server reported.
    Done(u64),
}

fn server_error(body: &postgres_protocol::message::backend::ErrorResponseBody) -> ServerError {
    let mut error = ServerError {
        code: String::new(),
        message: String::new(),
        detail: None,
        hint: None,
    };
    let mut fields = body.fields();
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => error.code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => error.message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'D' => error.detail = Some(String::from_utf8_lossy(field.value_bytes()).into_owned()),
            b'H' => error.hint = Some(String::from_utf8_lossy(field.value_bytes()).into_owned()),
            _ => {}
        }
    }
    error
}

/// The first line of a statement, shortened, for error messages.
pub fn abbreviate(sql: &str) -> String {
    let line = sql.trim().lines().next().unwrap_or_default();
    if line.chars().count() > 160 {
        format!("{}…", line.chars().take(160).collect::<String>())
    } else {
        line.to_string()
    }
}

/// `'text'` as an SQL literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `"name"` as an SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
