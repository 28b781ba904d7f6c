package lab

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
)

// cpio mode bits (newc format).
const (
	cpioDir  = 0o040000
	cpioReg  = 0o100000
	cpioLink = 0o120000
	cpioChr  = 0o020000
)

// cpioEntry is one file of an initramfs. Exactly one of Src (a host file
// to copy), Data (contents) or Link (symlink target) is used for regular
// files and links; directories and devices carry neither.
type cpioEntry struct {
	Name       string // path inside the archive, without leading "/"
	Mode       uint32 // type bits | permission bits
	Src        string
	Data       []byte
	Link       string
	Major, Min uint32 // device numbers for cpioChr
}

// archive collects entries and writes them as a newc cpio archive the
// kernel unpacks as its initramfs. Parent folders are added automatically.
type archive struct {
	entries map[string]cpioEntry
}

func newArchive() *archive { return &archive{entries: map[string]cpioEntry{}} }

func (a *archive) add(e cpioEntry) {
	e.Name = strings.TrimPrefix(path.Clean("/"+e.Name), "/")
	for d := path.Dir(e.Name); d != "." && d != "/"; d = path.Dir(d) {
		if _, ok := a.entries[d]; !ok {
			a.entries[d] = cpioEntry{Name: d, Mode: cpioDir | 0o755}
		}
	}
	a.entries[e.Name] = e
}

func (a *archive) dir(name string) { a.add(cpioEntry{Name: name, Mode: cpioDir | 0o755}) }
func (a *archive) file(name, src string, perm uint32) {
	a.add(cpioEntry{Name: name, Mode: cpioReg | perm, Src: src})
}
func (a *archive) data(name string, b []byte, perm uint32) {
	a.add(cpioEntry{Name: name, Mode: cpioReg | perm, Data: b})
}
func (a *archive) symlink(name, target string) {
	a.add(cpioEntry{Name: name, Mode: cpioLink | 0o777, Link: target})
}

// names returns the entries sorted so parents come before children.
func (a *archive) names() []string {
	n := make([]string, 0, len(a.entries))
	for k := range a.entries {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// writeTo writes the archive in cpio newc format.
func (a *archive) writeTo(w io.Writer) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	var off int64
	pad := func() error {
		if r := off % 4; r != 0 {
			n, err := bw.Write(make([]byte, 4-r))
			off += int64(n)
			return err
		}
		return nil
	}
	header := func(ino int, e cpioEntry, size int64) error {
		name := e.Name + "\x00"
		nlink := 1
		if e.Mode&0o170000 == cpioDir {
			nlink = 2
		}
		h := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
			ino, e.Mode, 0, 0, nlink, 0, size, 0, 0, e.Major, e.Min, len(name), 0)
		n, err := bw.WriteString(h + name)
		off += int64(n)
		if err != nil {
			return err
		}
		return pad()
	}
	for i, name := range a.names() {
		e := a.entries[name]
		var body []byte
		var src *os.File
		var size int64
		switch e.Mode & 0o170000 {
		case cpioReg:
			if e.Src != "" {
				f, err := os.Open(e.Src)
				if err != nil {
					return fmt.Errorf("initramfs %s: %w", name, err)
				}
				st, err := f.Stat()
				if err != nil {
					f.Close()
					return err
				}
				src, size = f, st.Size()
			} else {
				body, size = e.Data, int64(len(e.Data))
			}
		case cpioLink:
			body, size = []byte(e.Link), int64(len(e.Link))
		}
		if err := header(i+1, e, size); err != nil {
			return err
		}
		if src != nil {
			n, err := io.Copy(bw, src)
			src.Close()
			off += n
			if err != nil {
				return fmt.Errorf("initramfs %s: %w", name, err)
			}
			if n != size {
				return fmt.Errorf("initramfs %s: file changed size while archiving", name)
			}
		} else {
			n, err := bw.Write(body)
			off += int64(n)
			if err != nil {
				return err
			}
		}
		if err := pad(); err != nil {
			return err
		}
	}
	if err := header(0, cpioEntry{Name: "TRAILER!!!"}, 0); err != nil {
		return err
	}
	return bw.Flush()
}
