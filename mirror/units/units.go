// Package units parses the byte sizes and rates operators type on the
// command line: "65536", "64K", "64KiB", "1M", "2G", and for rates also
// "10MiB/s". Suffixes are binary (K = 1024).
//
//	chunk, err := units.ParseSize("1M")    // 1048576; zero is refused
//	rate, err := units.ParseRate("10M/s")  // 10485760; zero means "no limit"
package units

import (
	"fmt"
	"strconv"
	"strings"
)

// ParseSize parses a positive byte size.
func ParseSize(s string) (int64, error) {
	v, err := parse(s)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 65536, 64K, 1M)", s)
	}
	return v, nil
}

// ParseRate parses a rate in bytes per second; "0" is allowed.
func ParseRate(s string) (int64, error) {
	v, err := parse(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "/S"))
	if err != nil || v < 0 {
		return 0, fmt.Errorf("%q is not a rate (examples: 0, 512K, 10M)", s)
	}
	return v, nil
}

func parse(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(strings.TrimSpace(s)), "IB"), "B")
	mult := int64(1)
	if n := len(t); n > 0 {
		switch t[n-1] {
		case 'K':
			mult, t = 1<<10, t[:n-1]
		case 'M':
			mult, t = 1<<20, t[:n-1]
		case 'G':
			mult, t = 1<<30, t[:n-1]
		}
	}
	v, err := strconv.ParseInt(t, 10, 64)
	if err != nil || v < 0 || v > (1<<62)/mult {
		return -1, fmt.Errorf("%q: not a number of bytes", s)
	}
	return v * mult, nil
}
