// Package pgwire is a minimal PostgreSQL client (frontend/backend protocol
// 3.0, simple queries only) for the failover lab's client loop. It is
// written here rather than running psql or pgbench per attempt so that each
// attempt costs no fork and exec (which would blur outages of tens of
// milliseconds on a loaded machine), its timing and per-attempt deadline
// are exact, and a transaction counts as committed exactly when its
// CommandComplete and ReadyForQuery have arrived.
//
//	c, _ := net.Dial("tcp", "10.20.0.10:5432")
//	c.SetDeadline(time.Now().Add(time.Second))
//	pc, err := pgwire.Startup(c, "postgres", "postgres", "")
//	res, err := pc.Query("INSERT INTO ledger(id) VALUES (42)")
//	var pgErr *pgwire.Error; errors.As(err, &pgErr) // a statement's error
//	pc.Close()
//
// Authentication: trust, cleartext password and MD5 (not SCRAM). The
// decoder is strict (every length checked, messages bounded by MaxMessage)
// and fuzzed.
package pgwire
