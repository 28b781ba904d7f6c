package iscsi

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// DefaultPort is the iSCSI well-known port.
const DefaultPort = 3260

// URL is a parsed leg address iscsi://[user@]host[:port]/target-iqn/lun.
type URL struct {
	User   string // CHAP user; the secret never goes in the URL
	Host   string // host:port
	Target string
	LUN    uint64
}

func (u URL) String() string {
	s := "iscsi://"
	if u.User != "" {
		s += url.PathEscape(u.User) + "@"
	}
	return s + u.Host + "/" + u.Target + "/" + strconv.FormatUint(u.LUN, 10)
}

// ParseURL parses iscsi://[user@]host[:port]/target-iqn/lun (the form
// libiscsi and QEMU use). A password in the URL is refused: secrets come
// from a file or the configuration.
func ParseURL(s string) (URL, error) {
	u, err := url.Parse(s)
	if err != nil {
		return URL{}, fmt.Errorf("iscsi: bad URL %q: %w", s, err)
	}
	if u.Scheme != "iscsi" {
		return URL{}, fmt.Errorf("iscsi: URL %q does not start with iscsi://", s)
	}
	var out URL
	if u.User != nil {
		if _, has := u.User.Password(); has {
			return URL{}, fmt.Errorf("iscsi: URL %q carries a password; put the CHAP secret in a file (SecretFile) instead", redact(u))
		}
		out.User = u.User.Username()
	}
	if u.Hostname() == "" {
		return URL{}, fmt.Errorf("iscsi: URL %q has no host", s)
	}
	out.Host = HostPort(u.Host)
	parts := strings.Split(strings.Trim(u.Path, "/"), "/")
	if len(parts) != 2 || parts[0] == "" {
		return URL{}, fmt.Errorf("iscsi: URL %q: want iscsi://host[:port]/target-iqn/lun", s)
	}
	out.Target = parts[0]
	if !validName(out.Target) {
		return URL{}, fmt.Errorf("iscsi: URL %q: target %q is not an iqn./eui./naa. name", s, out.Target)
	}
	out.LUN, err = strconv.ParseUint(parts[1], 10, 14)
	if err != nil {
		return URL{}, fmt.Errorf("iscsi: URL %q: LUN %q is not a number below 16384", s, parts[1])
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return URL{}, fmt.Errorf("iscsi: URL %q: query and fragment are not supported", s)
	}
	return out, nil
}

func redact(u *url.URL) string {
	c := *u
	c.User = url.User(u.User.Username())
	return c.String()
}

// HostPort adds the default port 3260 to a host that has none.
func HostPort(h string) string {
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	h = strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")
	return net.JoinHostPort(h, strconv.Itoa(DefaultPort))
}

// IsLegSpec reports whether a leg spec is an iscsi:// address (for
// dispatching in mirror.OpenLeg).
func IsLegSpec(spec string) bool { return strings.HasPrefix(spec, "iscsi://") }
