package hademo

import (
	"net"
	"strings"
	"time"

	"github.com/hamirror/hamirror/testenv/halab/pgwire"
)

// pgQuery runs sql in one session on c within timeout and returns its
// command tags (halab's Lab.Query allows a statement 10 s: too short for
// the bulk load on a loaded host).
func pgQuery(c net.Conn, sql string, timeout time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(timeout))
	pc, err := pgwire.Startup(c, "postgres", "postgres", "")
	if err != nil {
		return "", err
	}
	defer pc.Close()
	res, err := pc.Query(sql)
	if err != nil {
		return "", err
	}
	return strings.Join(res.Tags, ", "), nil
}
