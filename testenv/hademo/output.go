package hademo

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hamirror/hamirror/testenv/halab"
)

// printer writes the story: numbered steps with their duration, indented
// lines under them, and progress that overwrites one line on a terminal
// (and prints a line every quarter elsewhere).
type printer struct {
	w     io.Writer
	tty   bool
	start time.Time

	mu        sync.Mutex
	step      int
	stepStart time.Time
	bar       bool // a progress line is drawn and not yet ended
	lastQ     int  // the last quarter printed without a terminal
}

func (p *printer) bold(s string) string {
	if p.tty {
		return "\033[1m" + s + "\033[0m"
	}
	return s
}

// Step starts step n: the previous one is closed with its duration.
func (p *printer) Step(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endBar()
	p.closeStep()
	p.step++
	p.stepStart = time.Now()
	fmt.Fprintf(p.w, "\n%s\n", p.bold(fmt.Sprintf("== %d. %s", p.step, fmt.Sprintf(format, args...))))
}

// closeStep prints how long the current step took.
func (p *printer) closeStep() {
	if p.step > 0 {
		fmt.Fprintf(p.w, "   (%s; %s since the start)\n", seconds(time.Since(p.stepStart)), seconds(time.Since(p.start)))
	}
}

// Say prints one line under the current step.
func (p *printer) Say(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endBar()
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		fmt.Fprintf(p.w, "   %s\n", line)
	}
}

// Raw prints text as it is (a command's output), indented.
func (p *printer) Raw(text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endBar()
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(p.w, "     %s\n", line)
	}
}

// Progress draws label's progress, done of total bytes.
func (p *printer) Progress(label string, done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	frac := 0.0
	if total > 0 {
		frac = min(1, float64(done)/float64(total))
	}
	line := fmt.Sprintf("%s %s %5.1f%%  %s of %s", label, progressBar(frac, 30), 100*frac, mib(done), mib(total))
	if p.tty {
		fmt.Fprintf(p.w, "\r   %-90s", line)
		p.bar = true
		return
	}
	if q := int(frac * 4); q > p.lastQ {
		p.lastQ = q
		fmt.Fprintf(p.w, "   %s\n", line)
	}
}

// ResetProgress starts a new progress line.
func (p *printer) ResetProgress() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endBar()
	p.lastQ = -1
}

func (p *printer) endBar() {
	if p.bar {
		fmt.Fprintln(p.w)
		p.bar = false
	}
}

// Close ends the last step.
func (p *printer) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endBar()
	p.closeStep()
	p.step = 0
}

func progressBar(frac float64, width int) string {
	n := int(frac * float64(width))
	return "[" + strings.Repeat("#", n) + strings.Repeat(".", width-n) + "]"
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func seconds(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

// phaseText says what each step of hamirror's takeover is
// (testenv/halab/hamirror's Breakdown names them); {victim} and {survivor}
// are the nodes.
var phaseText = map[string]string{
	"detect":         "{survivor} declares {victim} dead: every heartbeat medium silent",
	"fence":          "{survivor} fences {victim}: SCSI reservation taken on both arrays",
	"assemble":       "the mirror volume assembled on {survivor}",
	"mount":          "ext4 mounted",
	"VIP":            "virtual IP " + halab.VIP + " up on {survivor}",
	"database ready": "PostgreSQL started and answering",
}

// breakdown renders the client-visible outage and the takeover's steps,
// each with its time from the fault and from the step before, and a bar
// on a common scale, ending with the client's first commit.
func breakdown(o halab.Outage, phases []halab.Phase, victim, survivor string) []string {
	lines := []string{fmt.Sprintf("client-visible outage: %s (no commit from %s to %s; %d failed attempts)",
		seconds(o.Duration), o.From.Format("15:04:05.000"), o.To.Format("15:04:05.000"), o.Failures)}
	type row struct {
		name, what string
		at         time.Duration
	}
	var rows []row
	for _, ph := range phases {
		what := ph.Name
		if t, ok := phaseText[ph.Name]; ok {
			what = strings.NewReplacer("{victim}", victim, "{survivor}", survivor).Replace(t)
		}
		rows = append(rows, row{ph.Name, what, ph.At})
	}
	rows = append(rows, row{"client", "first commit through the VIP", o.FaultToService})
	// In time order: PostgreSQL may serve the client a moment before
	// mirrord has logged its start done.
	slices.SortStableFunc(rows, func(a, b row) int { return cmp.Compare(a.at, b.at) })
	scale := time.Duration(0)
	for _, r := range rows {
		scale = max(scale, r.at)
	}
	lines = append(lines, fmt.Sprintf("takeover by %s, counted from the power cut of %s:", survivor, victim))
	lines = append(lines, fmt.Sprintf("  %-9s %8s %8s  %-20s  %s", "step", "at", "+step", "", "what"))
	prev := time.Duration(0)
	for _, r := range rows {
		frac := 0.0
		if scale > 0 {
			frac = float64(max(0, r.at)) / float64(scale)
		}
		n := int(frac * 20)
		bar := strings.Repeat("=", n) + strings.Repeat(" ", 20-n)
		lines = append(lines, fmt.Sprintf("  %-9s %8s %8s  %s  %s", shortPhase(r.name), seconds(r.at), "+"+seconds(r.at-prev), bar, r.what))
		prev = r.at
	}
	return lines
}

// shortPhase is a phase's name in the breakdown's first column.
func shortPhase(name string) string {
	switch name {
	case "database ready":
		return "database"
	case "VIP":
		return "vip"
	}
	return name
}
