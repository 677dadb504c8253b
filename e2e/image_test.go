package e2e

import (
	"bufio"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// containerfile is the image's build file, relative to this package.
const containerfile = "../deploy/container/Containerfile"

// imageSpec is what the Containerfile says the image holds and how phxd
// runs in it.
type imageSpec struct {
	buildCmd string            // the go build command of the build stage
	env      map[string]string // ENV of the final stage
	user     string            // USER
	workdir  string            // WORKDIR
	entry    string            // ENTRYPOINT's program
}

// readContainerfile extracts the parts of the Containerfile the test
// reproduces, so the test follows the file rather than a copy of it.
func readContainerfile(t *testing.T) imageSpec {
	t.Helper()
	f, err := os.Open(containerfile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Join continuation lines and drop comments.
	var stmts []string
	var cur strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") || line == "" && cur.Len() == 0 {
			continue
		}
		if s, ok := strings.CutSuffix(line, "\\"); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(line)
		stmts = append(stmts, cur.String())
		cur.Reset()
	}
	spec := imageSpec{env: map[string]string{}}
	final := false
	for _, s := range stmts {
		word, rest, _ := strings.Cut(s, " ")
		switch strings.ToUpper(word) {
		case "FROM":
			final = !strings.Contains(strings.ToLower(rest), " as ")
		case "RUN":
			if i := strings.Index(rest, "CGO_ENABLED=0 go build"); i >= 0 {
				cmd := rest[i:]
				if j := strings.Index(cmd, "&&"); j >= 0 {
					cmd = cmd[:j]
				}
				spec.buildCmd = strings.Join(strings.Fields(cmd), " ")
			}
		case "ENV":
			if final {
				for _, kv := range regexp.MustCompile(`(\w+)=(\S+)`).FindAllStringSubmatch(rest, -1) {
					spec.env[kv[1]] = kv[2]
				}
			}
		case "USER":
			spec.user = rest
		case "WORKDIR":
			if final {
				spec.workdir = rest
			}
		case "ENTRYPOINT":
			var argv []string
			if err := json.Unmarshal([]byte(rest), &argv); err != nil || len(argv) == 0 {
				t.Fatalf("ENTRYPOINT %s: want the exec form", rest)
			}
			spec.entry = argv[0]
		}
	}
	if spec.buildCmd == "" || spec.entry == "" || spec.user == "" || spec.workdir == "" || spec.env["PHXD_DATA_DIR"] == "" {
		t.Fatalf("Containerfile not understood: %+v", spec)
	}
	return spec
}

// TestContainerImage builds the binaries as the Containerfile's build stage
// does and runs phxd as its final stage would: in a root file system that
// holds the two binaries, a passwd file and the data directory, and no
// libc or shell, as the non-root user, with the image's environment. A
// member then reaches it from outside with the CLI. (No container engine
// is needed: the same steps, under chroot; without root the binaries are
// only checked to be static.)
func TestContainerImage(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: skipping the image test (builds both binaries statically)")
	}
	spec := readContainerfile(t)
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", "./server/cmd/phxd", "./client/cmd/phx"} {
		if !strings.Contains(spec.buildCmd, want) {
			t.Fatalf("the build stage's command %q lacks %q", spec.buildCmd, want)
		}
	}
	root := t.TempDir()
	binDir := filepath.Join(root, filepath.Dir(spec.entry))
	// The build stage's command, with its output in the root file system.
	// -ldflags is kept as the file has it, with VERSION given.
	ldflags := regexp.MustCompile(`-ldflags "([^"]*)"`).FindStringSubmatch(spec.buildCmd)
	if ldflags == nil {
		t.Fatalf("no -ldflags in %q", spec.buildCmd)
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags", strings.ReplaceAll(ldflags[1], "${VERSION}", "image-test"),
		"-o", binDir+"/", "./server/cmd/phxd", "./client/cmd/phx")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, name := range []string{"phxd", "phx"} {
		f, err := elf.Open(filepath.Join(binDir, name))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Fatalf("%s has a program interpreter: it is not static", name)
			}
		}
		if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
			t.Fatalf("%s needs %v", name, libs)
		}
		f.Close()
	}
	out, err := exec.Command(filepath.Join(binDir, "phxd"), "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "image-test") {
		t.Fatalf("phxd --version: %v: %s", err, out)
	}
	if os.Geteuid() != 0 {
		t.Skip("not root: the binaries are static; running phxd in a bare root file system needs chroot")
	}

	// What distroless static:nonroot holds besides the binaries.
	uid, gid := 65532, 65532
	if spec.user != fmt.Sprintf("%d:%d", uid, gid) {
		t.Fatalf("USER %s, want %d:%d (distroless nonroot)", spec.user, uid, gid)
	}
	for _, d := range []string{"etc", "tmp", strings.TrimPrefix(spec.workdir, "/")} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(filepath.Join(root, "tmp"), 0o1777)
	if err := os.WriteFile(filepath.Join(root, "etc/passwd"), []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(root, strings.TrimPrefix(spec.env["PHXD_DATA_DIR"], "/"))
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dataDir, uid, gid); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("root without the right to change owners here: %v", err)
		}
		t.Fatal(err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}

	// The image's environment; only the addresses move to free loopback
	// ports (flags win over PHXD_*, as on the image).
	addr, metrics := freePort(t), freePort(t)
	var env []string
	for k, v := range spec.env {
		env = append(env, k+"="+v)
	}
	cmd := exec.Command(spec.entry, "--dev", "--listen", addr, "--metrics-listen", metrics)
	cmd.Path = spec.entry
	cmd.Dir = spec.workdir
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: root, Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	var logs syncLog
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) {
			t.Skipf("root without the right to chroot or change user here: %v", err)
		}
		t.Fatalf("start %s in the image's root: %v", spec.entry, err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("phxd output:\n%s", logs.String())
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("phxd not ready in 60s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// JSON logs, as the image sets.
	if first, _, _ := strings.Cut(logs.String(), "\n"); !json.Valid([]byte(first)) {
		t.Fatalf("log line is not JSON: %s", first)
	}
	// A member, outside, with the dev credentials phxd wrote as the
	// non-root user into its data directory.
	who := exec.Command(filepath.Join(bin, "phx"), "--hub", addr, "--data-dir", dataDir, "--as", "contoso", "whoami", "--json")
	whoOut, err := who.CombinedOutput()
	if err != nil {
		t.Fatalf("phx whoami: %v\n%s", err, whoOut)
	}
	var id map[string]any
	if err := json.Unmarshal(whoOut, &id); err != nil || id["org"] != "contoso" {
		t.Fatalf("phx whoami --json: %s (%v)", whoOut, err)
	}
	if v := fmt.Sprint(id["hub_version"], id["hubVersion"]); !strings.Contains(v, "image-test") {
		t.Fatalf("the hub reports version %s, not the one built for the image", v)
	}
	st, err := os.Stat(filepath.Join(dataDir, "pki"))
	if err != nil {
		t.Fatal(err)
	}
	if owner := st.Sys().(*syscall.Stat_t).Uid; owner != uint32(uid) {
		t.Fatalf("the dev PKI is owned by uid %d, want %d", owner, uid)
	}
	// The image stops gracefully on SIGTERM.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("phxd after SIGTERM: %v", err)
	}
}

// syncLog collects a process's output.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
