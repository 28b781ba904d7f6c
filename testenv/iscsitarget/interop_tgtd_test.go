package iscsitarget

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/hamirror/hamirror/iscsi"
)

func writeSecret(t *testing.T, s string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestTgtdLogin(t *testing.T) {
	td, _ := newTgtd(t, 8<<20, "")
	// Target 2 requires one-way CHAP, target 3 mutual CHAP.
	dir := t.TempDir()
	for _, tid := range []int{2, 3} {
		img := filepath.Join(dir, "t.img")
		os.WriteFile(img, make([]byte, 1<<20), 0o644)
		iqn := testIQN + []string{"", "", "-chap", "-mutual"}[tid]
		if err := td.AddTarget(tid, iqn, []string{img}, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := td.AddAccount(2, "alice", "alice-secret-123", false); err != nil {
		t.Fatal(err)
	}
	if err := td.AddAccount(3, "bob", "bob-secret-4567", false); err != nil {
		t.Fatal(err)
	}
	if err := td.AddAccount(3, "array", "array-secret-89", true); err != nil {
		t.Fatal(err)
	}
	base := "iscsi://" + td.Portal + "/" + testIQN
	cases := []struct {
		name string
		url  string
		cfg  iscsi.Config
		want error
	}{
		{"none", base + "/1", iscsi.Config{}, nil},
		{"chap required but none configured", base + "-chap/1", iscsi.Config{}, iscsi.ErrAuth},
		{"chap", "iscsi://alice@" + td.Portal + "/" + testIQN + "-chap/1",
			iscsi.Config{SecretFile: writeSecret(t, "alice-secret-123")}, nil},
		{"chap wrong secret", "iscsi://alice@" + td.Portal + "/" + testIQN + "-chap/1",
			iscsi.Config{Secret: "wrong-secret-000"}, iscsi.ErrAuth},
		{"chap unknown user", base + "-chap/1",
			iscsi.Config{User: "mallory", Secret: "alice-secret-123"}, iscsi.ErrAuth},
		{"mutual", base + "-mutual/1",
			iscsi.Config{User: "bob", Secret: "bob-secret-4567", TargetUser: "array", TargetSecretFile: writeSecret(t, "array-secret-89")}, nil},
		{"mutual wrong target secret", base + "-mutual/1",
			iscsi.Config{User: "bob", Secret: "bob-secret-4567", TargetSecret: "not-the-array-1"}, iscsi.ErrAuth},
		{"unknown target", base + "-nope/1", iscsi.Config{}, iscsi.ErrLogin},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			d, err := iscsi.OpenLeg(ctx, c.url, c.cfg)
			if c.want == nil {
				if err != nil {
					t.Fatalf("login: %v", err)
				}
				defer d.Close()
				buf := make([]byte, 512)
				if err := d.ReadAt(buf, 0); err != nil {
					t.Fatalf("read after login: %v", err)
				}
				return
			}
			if err == nil {
				d.Close()
				t.Fatalf("login succeeded, want %v", c.want)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("login error %v, want %v", err, c.want)
			}
		})
	}
}

func TestTgtdDiscovery(t *testing.T) {
	td, _ := newTgtd(t, 8<<20, "")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := iscsi.Discover(ctx, td.Portal, iscsi.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].Name != testIQN || len(got[0].Addresses) == 0 {
		t.Fatalf("discovered %+v, want %s", got, testIQN)
	}
}

// ioConfigs exercise every data-transfer path: immediate data, unsolicited
// Data-Out, R2T-solicited bursts, small PDUs and digests.
func ioConfigs() map[string]iscsi.Config {
	return map[string]iscsi.Config{
		"default":            {},
		"small bursts":       {MaxRecvDataSegmentLength: 4096, FirstBurstLength: 8192, MaxBurstLength: 16384},
		"initial r2t":        {InitialR2T: true, NoImmediateData: true, MaxBurstLength: 65536},
		"immediate only":     {InitialR2T: true, FirstBurstLength: 4096},
		"digests":            {HeaderDigest: true, DataDigest: true, MaxRecvDataSegmentLength: 8192},
		"unsolicited no imm": {NoImmediateData: true, FirstBurstLength: 65536},
	}
}

func TestTgtdIO(t *testing.T) {
	td, img := newTgtd(t, 32<<20, "")
	if err := td.SetParam(1, "HeaderDigest", "CRC32C,None"); err != nil {
		t.Fatal(err)
	}
	if err := td.SetParam(1, "DataDigest", "CRC32C,None"); err != nil {
		t.Fatal(err)
	}
	sizes := []int{512, 4096, 8192 + 512, 65536, 65536 + 512, 256 << 10, 1 << 20, 3<<20 + 512}
	seed := uint64(0)
	for name, cfg := range ioConfigs() {
		t.Run(name, func(t *testing.T) {
			d := openDisk(t, legURL(td), cfg)
			if p := d.Params(); (cfg.HeaderDigest || cfg.DataDigest) && !(p.HeaderDigest && p.DataDigest) {
				t.Fatalf("digests not negotiated: %+v", p)
			}
			off := int64(512 * 7)
			for _, n := range sizes {
				seed++
				w := pattern(seed, n)
				if err := d.WriteAt(w, off, false); err != nil {
					t.Fatalf("write %d at %d: %v", n, off, err)
				}
				r := make([]byte, n)
				if err := d.ReadAt(r, off); err != nil {
					t.Fatalf("read %d at %d: %v", n, off, err)
				}
				mustEqual(t, "read back", r, w)
				mustEqual(t, "backing file", fileAt(t, img, off, n), w)
				off += int64(n) + 512
			}
		})
	}
}

func TestTgtdFUAFlushCapacityLUNs(t *testing.T) {
	td, img := newTgtd(t, 16<<20, "")
	d := openDisk(t, legURL(td), iscsi.Config{})
	if d.Size() != 16<<20 || d.BlockSize() != 512 {
		t.Fatalf("size %d block %d, want 16 MiB x 512", d.Size(), d.BlockSize())
	}
	w := pattern(7, 64<<10)
	if err := d.WriteAt(w, 1<<20, true); err != nil {
		t.Fatalf("FUA write: %v", err)
	}
	mustEqual(t, "FUA write on the array", fileAt(t, img, 1<<20, len(w)), w)
	if err := d.Flush(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	luns, err := d.ReportLUNs()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(luns, 1) {
		t.Fatalf("REPORT LUNS %v lacks LUN 1", luns)
	}
	if err := d.WriteAt(w[:100], 0, false); !errors.Is(err, iscsi.ErrAlignment) {
		t.Fatalf("unaligned write: %v, want ErrAlignment", err)
	}
	if err := d.ReadAt(make([]byte, 1024), d.Size()-512); err == nil {
		t.Fatal("read past the end succeeded")
	}
	info := d.Info()
	if info.Serial == "" || len(info.DeviceIDs) == 0 {
		t.Fatalf("no serial or device id: %+v", info)
	}
}

// Zero on tgtd LUNs: by writing on thick ones, and on thin ones too by
// default (tgtd's UNMAP ignores reservations, see pr_zero_tgtd_test.go);
// UNMAP on thin ones when the operator trusts the array.
func TestTgtdZero(t *testing.T) {
	for _, c := range []struct {
		name string
		thin bool
		mode iscsi.ZeroWritingMode
		want iscsi.ZeroMethod
	}{
		{"thick", false, iscsi.ZeroWritingNever, iscsi.ZeroWrite},
		{"thin", true, "", iscsi.ZeroWrite},
		{"thin-never", true, iscsi.ZeroWritingNever, iscsi.ZeroUnmap},
	} {
		t.Run(c.name, func(t *testing.T) {
			params := ""
			if c.thin {
				params = "thin_provisioning=1"
			}
			td, img := newTgtd(t, 16<<20, params)
			d := openDisk(t, legURL(td), iscsi.Config{ZeroByWriting: c.mode})
			want := c.want
			if got := d.ZeroMethod(true); got != want {
				t.Fatalf("Zero method %v with limits %+v capacity %+v, want %v", got, d.Limits(), d.Capacity(), want)
			}
			w := pattern(9, 4<<20)
			if err := d.WriteAt(w, 0, false); err != nil {
				t.Fatal(err)
			}
			if err := d.Zero(512, 3<<20, true); err != nil {
				t.Fatalf("zero: %v", err)
			}
			zeroed := append([]byte(nil), w...)
			clear(zeroed[512 : 512+3<<20])
			r := make([]byte, len(w))
			if err := d.ReadAt(r, 0); err != nil {
				t.Fatal(err)
			}
			mustEqual(t, "after Zero", r, zeroed)
			mustEqual(t, "backing file after Zero", fileAt(t, img, 0, len(w)), zeroed)
		})
	}
}

func TestTgtdManyInFlight(t *testing.T) {
	td, img := newTgtd(t, 32<<20, "")
	d := openDisk(t, legURL(td), iscsi.Config{QueueDepth: 64})
	const workers, per, bs = 64, 40, 4096
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				off := int64((w*per + i) * bs)
				b := pattern(uint64(off), bs)
				if err := d.WriteAt(b, off, false); err != nil {
					errs <- err
					return
				}
				r := make([]byte, bs)
				if err := d.ReadAt(r, off); err != nil {
					errs <- err
					return
				}
				if string(r) != string(b) {
					errs <- errors.New("mismatch under concurrency")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	mustEqual(t, "backing file", fileAt(t, img, 0, bs), pattern(0, bs))
	last := int64((workers*per - 1) * bs)
	mustEqual(t, "backing file end", fileAt(t, img, last, bs), pattern(uint64(last), bs))
}
