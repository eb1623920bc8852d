package mountinfo

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/plain`:              `/plain`,
		`/a\040b`:             `/a b`,
		`/tab\011nl\012end`:   "/tab\tnl\nend",
		`/back\134slash`:      `/back\slash`,
		`/trailing\040`:       `/trailing `,
		`\040`:                ` `,
		`/short\04`:           `/short\04`,
		`/not\08octal`:        `/not\08octal`,
		`/too\777big`:         `/too\777big`,
		`/twice\040\040x`:     `/twice  x`,
		`/literal\134040`:     `/literal\040`,
		`/utf8\303\251`:       "/utf8\u00e9",
		`/backslash-at-end\\`: `/backslash-at-end\\`,
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseLineFields(t *testing.T) {
	// The kernel escapes a space in a mountpoint or source as \040.
	line := `41 27 0:52 / /tmp/mergefs\040e2e/mnt rw,nosuid,nodev,relatime - fuse.mergefs /srv/my\040data rw,user_id=0,group_id=0,default_permissions`
	got, err := ParseLine(line)
	if err != nil {
		t.Fatal(err)
	}
	want := Mount{
		ID: 41, ParentID: 27, Major: 0, Minor: 52,
		Root: "/", Mountpoint: "/tmp/mergefs e2e/mnt", Options: "rw,nosuid,nodev,relatime",
		FSType: "fuse.mergefs", Source: "/srv/my data", SuperOptions: "rw,user_id=0,group_id=0,default_permissions",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLine:\n got %+v\nwant %+v", got, want)
	}
	if !got.IsFUSE() {
		t.Errorf("fuse.mergefs is not FUSE")
	}
}

func TestParseLineOptionalFields(t *testing.T) {
	// proc(5)'s example, with two optional fields before the separator.
	line := `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue`
	got, err := ParseLine(line)
	if err != nil {
		t.Fatal(err)
	}
	want := Mount{
		ID: 36, ParentID: 35, Major: 98, Minor: 0,
		Root: "/mnt1", Mountpoint: "/mnt2", Options: "rw,noatime", Optional: []string{"master:1", "shared:7"},
		FSType: "ext3", Source: "/dev/root", SuperOptions: "rw,errors=continue",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ParseLine:\n got %+v\nwant %+v", got, want)
	}
	if got.IsFUSE() {
		t.Errorf("ext3 taken for FUSE")
	}
}

func TestParseLineRejectsMalformed(t *testing.T) {
	for _, line := range []string{
		"",
		"36 35 98:0 /mnt1 /mnt2 rw,noatime ext3 /dev/root rw", // no separator
		"36 35 98:0 /mnt1 /mnt2 rw -",                         // nothing after it
		"x 35 98:0 / /mnt rw - ext4 /dev/sda rw",
		"36 35 98 / /mnt rw - ext4 /dev/sda rw",
		"36 35 98:y / /mnt rw - ext4 /dev/sda rw",
	} {
		if m, err := ParseLine(line); err == nil {
			t.Errorf("ParseLine(%q) = %+v, want an error", line, m)
		}
	}
}

func TestIsFUSE(t *testing.T) {
	for fstype, want := range map[string]bool{
		"fuse": true, "fuseblk": true, "fuse.mergefs": true, "fuse.loopback": true,
		"fusectl": false, "ext4": false, "tmpfs": false,
	} {
		if got := (Mount{FSType: fstype}).IsFUSE(); got != want {
			t.Errorf("IsFUSE(%s) = %v, want %v", fstype, got, want)
		}
	}
}

const stacked = `22 1 0:21 / /proc rw,relatime - proc proc rw
27 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw
40 27 0:50 / /tmp/m rw,relatime - fuse.mergefs /tmp/b rw
41 40 0:51 / /tmp/m rw,relatime - fuse.loopback /tmp/b rw
42 41 0:52 / /tmp/m/sub rw,relatime - tmpfs tmpfs rw
43 27 0:53 / /tmp/other rw,relatime - tmpfs tmpfs rw
`

func TestTopmostOfStackedMounts(t *testing.T) {
	mounts, err := Parse(strings.NewReader(stacked))
	if err != nil {
		t.Fatal(err)
	}
	if len(mounts) != 6 {
		t.Fatalf("parsed %d mounts, want 6", len(mounts))
	}
	m, ok := Topmost(mounts, "/tmp/m")
	if !ok || m.ID != 41 || m.FSType != "fuse.loopback" || m.Minor != 51 {
		t.Errorf("Topmost(/tmp/m) = %+v, %v; want mount 41 (the loopback stacked on mergefs)", m, ok)
	}
	// The order of the lines does not decide: the mount that another one at
	// the same place sits on is not the topmost.
	reversed := []Mount{mounts[3], mounts[2]}
	if m, _ := Topmost(reversed, "/tmp/m"); m.ID != 41 {
		t.Errorf("Topmost with the lines reversed = mount %d, want 41", m.ID)
	}
	if _, ok := Topmost(mounts, "/tmp"); ok {
		t.Errorf("found a mount at /tmp, which has none")
	}
	var under []int
	for _, m := range Under(mounts, "/tmp/m") {
		under = append(under, m.ID)
	}
	if !reflect.DeepEqual(under, []int{42, 41, 40}) {
		t.Errorf("Under(/tmp/m) = %v, want [42 41 40] (deepest first, not /tmp/other)", under)
	}
}

func TestWithin(t *testing.T) {
	for _, c := range []struct {
		path, dir string
		want      bool
	}{
		{"/tmp/a", "/tmp/a", true},
		{"/tmp/a/b", "/tmp/a", true},
		{"/tmp/ab", "/tmp/a", false},
		{"/tmp", "/tmp/a", false},
		{"/tmp/a", "/", true},
	} {
		if got := Within(c.path, c.dir); got != c.want {
			t.Errorf("Within(%q, %q) = %v, want %v", c.path, c.dir, got, c.want)
		}
	}
}

func TestReadOwnMountTable(t *testing.T) {
	mounts, err := Read()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := Topmost(mounts, "/"); !ok {
		t.Errorf("no mount at / in %d mounts", len(mounts))
	}
	if _, ok, err := At("/"); !ok || err != nil {
		t.Errorf("At(/) = %v, %v", ok, err)
	}
}

func TestStaleWorkdirRule(t *testing.T) {
	tmp := t.TempDir()
	live, dead, other := filepath.Join(tmp, WorkdirPrefix+"1"), filepath.Join(tmp, WorkdirPrefix+"2"), filepath.Join(tmp, "TestSomething3")
	demo := filepath.Join(tmp, DemoWorkdirPrefix+"4")
	for _, d := range []string{live, dead, other, demo} {
		if err := os.MkdirAll(filepath.Join(d, "mnt"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The parent of this test process is alive; a pid past pid_max is not.
	os.WriteFile(filepath.Join(live, OwnerFile), []byte(strconv.Itoa(os.Getppid())), 0o644)
	os.WriteFile(filepath.Join(dead, OwnerFile), []byte("99999999\n"), 0o644)
	os.WriteFile(filepath.Join(demo, OwnerFile), []byte("99999999\n"), 0o644)
	for _, c := range []struct {
		mountpoint string
		stale      bool
	}{
		{filepath.Join(live, "mnt"), false},
		{filepath.Join(dead, "mnt"), true},
		{filepath.Join(other, "mnt"), false}, // not a test work directory
		{filepath.Join(demo, "mnt"), true},
		{tmp, false},
	} {
		stale := isWorkdirMount(tmp, c.mountpoint) && !ownerAlive(tmp, c.mountpoint)
		if stale != c.stale {
			t.Errorf("%s: stale %v, want %v", c.mountpoint, stale, c.stale)
		}
	}
}
