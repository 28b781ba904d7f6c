package heartbeat

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestNextBootGrowsEvenWhenTheClockGoesBack(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	now := time.Unix(1_800_000_000, 0)
	b1, err := NextBoot(dir, now)
	if err != nil || b1 != uint64(now.UnixNano()) {
		t.Fatalf("first boot %d %v", b1, err)
	}
	b2, err := NextBoot(dir, now.Add(-time.Hour)) // clock set back
	if err != nil || b2 != b1+1 {
		t.Fatalf("boot after clock went back: %d, want %d (%v)", b2, b1+1, err)
	}
	b3, _ := NextBoot(dir, now.Add(time.Hour))
	if b3 != uint64(now.Add(time.Hour).UnixNano()) {
		t.Errorf("boot with the clock ahead: %d", b3)
	}
	os.WriteFile(filepath.Join(dir, "heartbeat-boot"), []byte("garbage"), 0o644)
	if _, err := NextBoot(dir, now); err == nil {
		t.Error("corrupt boot file accepted")
	}
}
