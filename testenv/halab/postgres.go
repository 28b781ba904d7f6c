package halab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab/pgwire"
)

// PGBin holds the PostgreSQL 15 server binaries.
const PGBin = "/usr/lib/postgresql/15/bin"

// PGPort is the port PostgreSQL listens on in the lab.
const PGPort = 5432

// LedgerTable is the table the client loop writes one row per transaction to.
const LedgerTable = "ledger"

// PGAvailable reports why PostgreSQL cannot run in the lab (nil: it can).
func PGAvailable() error {
	if _, err := os.Stat(filepath.Join(PGBin, "postgres")); err != nil {
		return fmt.Errorf("PostgreSQL 15 server not installed (%s): apt-get install postgresql-15", PGBin)
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		return errors.New("setpriv (util-linux) not installed")
	}
	return nil
}

// InitDB makes a PostgreSQL cluster in dir (a host path the nodes see),
// owned by postgres, set up for the lab: listening on every address on
// PGPort, trust authentication from the lab's networks, its socket in
// /run/postgresql (private to each node), fsync on (the default: a commit
// is durable when acknowledged), and a server log whose lines start with
// the time in milliseconds, UTC (PostgreSQL 15's default prefix, said
// here for the breakdowns that read it) and tell each checkpoint.
func InitDB(ctx context.Context, dir string) error {
	if err := PGAvailable(); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "bash", "-c", initDBScript(dir)).CombinedOutput()
	if err != nil {
		return fmt.Errorf("initdb %s: %w: %s", dir, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// InitDB is InitDB run inside the node, for a folder only the node sees
// (on a filesystem mounted there).
func (n *Node) InitDB(ctx context.Context, dir string) error {
	if err := PGAvailable(); err != nil {
		return err
	}
	_, err := n.Sh(ctx, initDBScript(dir))
	return err
}

func initDBScript(dir string) string {
	conf := fmt.Sprintf("\n# halab\nlisten_addresses = '*'\nport = %d\nunix_socket_directories = '/run/postgresql'\n"+
		"max_connections = 50\nshared_buffers = 16MB\nlogging_collector = off\n"+
		"log_line_prefix = '%%m [%%p] '\nlog_timezone = 'UTC'\nlog_checkpoints = on\n", PGPort)
	d := shellQuote(dir)
	return "set -e\nmkdir -p " + d + "\nchown postgres:postgres " + d + "\nchmod 700 " + d + "\n" +
		"setpriv --reuid=postgres --regid=postgres --init-groups -- " + PGBin + "/initdb -D " + d +
		" -U postgres --auth=trust --no-sync -E UTF8 --locale=C >/dev/null\n" +
		"printf %s " + shellQuote(conf) + " >> " + d + "/postgresql.conf\n" +
		"echo 'host all all 10.0.0.0/8 trust' >> " + d + "/pg_hba.conf\n"
}

// PostgresCommand is the argument list that runs PostgreSQL in the
// foreground as user postgres on data directory dir (for StartDaemon).
func PostgresCommand(dir string) []string {
	return []string{"setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--", filepath.Join(PGBin, "postgres"), "-D", dir}
}

// StartPostgres runs PostgreSQL on dir in node n and waits until it
// answers on the node's public address.
func (n *Node) StartPostgres(ctx context.Context, dir string) (*Daemon, error) {
	d, err := n.StartDaemon("postgres", PostgresCommand(dir)...)
	if err != nil {
		return nil, err
	}
	if err := n.lab.WaitPG(ctx, net.JoinHostPort(n.Addr(), fmt.Sprint(PGPort)), 60*time.Second, d.Done()); err != nil {
		d.Stop(5 * time.Second)
		b, _ := os.ReadFile(d.Log)
		return nil, fmt.Errorf("%s: postgres: %w; its log: %s", n.ID, err, tail(b, 600))
	}
	return d, nil
}

// WaitPG waits until PostgreSQL at addr answers a query from the client
// namespace, or gone is closed, or timeout passes.
func (l *Lab) WaitPG(ctx context.Context, addr string, timeout time.Duration, gone <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if _, err = l.Query(ctx, addr, "SELECT 1"); err == nil {
			return nil
		}
		select {
		case <-gone:
			return errors.New("exited")
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("no answer at %s within %v: %w", addr, timeout, err)
}

// Query runs sql on PostgreSQL at addr (host:port) from the client
// namespace, in one short session.
func (l *Lab) Query(ctx context.Context, addr, sql string) (*pgwire.Result, error) {
	c, err := l.DialClient(ctx, addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	pc, err := pgwire.Startup(c, "postgres", "postgres", "")
	if err != nil {
		return nil, err
	}
	defer pc.Close()
	return pc.Query(sql)
}

// CreateLedger creates the client loop's table in PostgreSQL at addr.
func (l *Lab) CreateLedger(ctx context.Context, addr string) error {
	_, err := l.Query(ctx, addr, "CREATE TABLE IF NOT EXISTS "+LedgerTable+" (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now())")
	return err
}

func tail(b []byte, n int) string {
	s := strings.TrimSpace(string(b))
	if len(s) > n {
		s = "..." + s[len(s)-n:]
	}
	return s
}
