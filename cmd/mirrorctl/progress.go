package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// isTerminal reports whether w is a terminal (progress bars only there).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

// progressBar draws one self-overwriting line on a terminal.
type progressBar struct {
	w     io.Writer
	label string
	tty   bool
	drawn bool
}

func (p *progressBar) draw(done, total int64, rate float64, eta float64) {
	if !p.tty {
		return
	}
	const width = 30
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	n := int(frac * width)
	bar := strings.Repeat("=", n) + strings.Repeat(" ", width-n)
	if n < width {
		bar = bar[:n] + ">" + bar[n+1:]
	}
	line := fmt.Sprintf("\r%s [%s] %5.1f%% %s/%s %s/s", p.label, bar, 100*frac, human(done), human(total), human(int64(rate)))
	if eta > 0 {
		line += fmt.Sprintf(" ETA %s", (time.Duration(eta) * time.Second).String())
	}
	fmt.Fprintf(p.w, "%-100s", line)
	p.drawn = true
}

func (p *progressBar) finish() {
	if p.drawn {
		fmt.Fprintln(p.w)
	}
}

// poll calls f every interval until it returns done or an error, or ctx ends.
func poll(ctx context.Context, interval time.Duration, f func() (bool, error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		done, err := f()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}
