package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"github.com/mergefs/mergefs/internal/event"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sys/unix"

	mergefs "github.com/mergefs/mergefs/fs"
	"github.com/mergefs/mergefs/journal"
)

// Files a daemon keeps in its state directory besides rejected/.
const (
	stateLockName    = "daemon.lock"
	statusSocketName = "mergefs.sock"
	journalName      = "conflicts.jsonl"
)

// shutdownTimeout bounds how long open scrapes may hold up the exit.
const shutdownTimeout = 2 * time.Second

// operations is what a mount offers its operators: the conflict journal,
// metrics (always on the status socket in the state directory, and on
// --metrics if given), and the systemd notifications.
type operations struct {
	log      *slog.Logger
	stateDir string
	lock     *os.File
	journal  *journal.Journal
	metrics  *metrics
	notify   notifier
	server   *http.Server
	// listeners are bound before mounting, so that a taken port fails the
	// command before anything is mounted.
	listeners []net.Listener
	// socket is the status socket's path; its listener removes it on close.
	socket string
	served bool
}

// startOperations claims the state directory for this daemon and opens the
// journal and the listeners. The caller must call close.
func startOperations(stateDir, metricsAddr string, logger *slog.Logger) (_ *operations, err error) {
	ops := &operations{log: logger, stateDir: stateDir, metrics: newMetrics()}
	defer func() {
		if err != nil {
			ops.close()
		}
	}()
	if ops.lock, err = claimStateDir(stateDir); err != nil {
		return nil, err
	}
	ops.notify, err = newNotifier(os.Getenv("NOTIFY_SOCKET"))
	if err != nil {
		logger.Warn("not notifying the service manager", "err", err)
	}
	ops.journal, err = journal.Open(filepath.Join(stateDir, journalName), journal.Options{Logger: logger})
	if err != nil {
		return nil, err
	}

	ops.socket = filepath.Join(stateDir, statusSocketName)
	// The state directory is this daemon's (claimStateDir): a socket left
	// there belongs to a daemon that is gone.
	if err := os.Remove(ops.socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	unixLn, err := net.Listen("unix", ops.socket)
	if err != nil {
		// A state directory path too long for a socket address must not
		// stop the mount; status then needs --metrics.
		logger.Warn("no status socket; `mergefs status` needs --metrics", "path", ops.socket, "err", err)
		ops.socket = ""
	} else {
		if err := os.Chmod(ops.socket, 0o600); err != nil {
			unixLn.Close()
			return nil, fmt.Errorf("status socket: %w", err)
		}
		ops.listeners = append(ops.listeners, unixLn)
	}
	if metricsAddr != "" {
		tcpLn, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			return nil, fmt.Errorf("--metrics %s: %w", metricsAddr, err)
		}
		ops.listeners = append(ops.listeners, tcpLn)
	}

	mux := http.NewServeMux()
	handler := promhttp.HandlerFor(ops.metrics.registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelError),
		Registry: ops.metrics.registry,
	})
	mux.Handle("/metrics", handler)
	ops.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	return ops, nil
}

// claimStateDir takes an exclusive lock on the state directory for the life
// of the process: two daemons would interleave their journals and fight
// over the status socket. The kernel drops the lock when the process dies.
func claimStateDir(stateDir string) (*os.File, error) {
	path := filepath.Join(stateDir, stateLockName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("state directory %s is in use by another mergefs daemon (pid %s); give each mount its own --state-dir",
				stateDir, cmp.Or(strings.TrimSpace(string(holder)), "unknown"))
		}
		return nil, fmt.Errorf("lock state directory: %w", err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// observer receives every commit of the mount.
func (ops *operations) observer() event.Observer {
	return observers{ops.metrics, ops.journal}
}

// mounted starts serving metrics and tells the service manager the mount is
// ready. Called once the mount is usable.
func (ops *operations) mounted(fsys *mergefs.FS, backing, mountpoint string, inPlace bool, readMemory int64) {
	if err := ops.metrics.register(fsys.Stats, ops.journal.Stats, backing, mountpoint, inPlace, readMemory); err != nil {
		ops.log.Error("metrics unavailable", "err", err)
	} else {
		for _, ln := range ops.listeners {
			go func() {
				if err := ops.server.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
					ops.log.Error("metrics server stopped", "addr", ln.Addr().String(), "err", err)
				}
			}()
			ops.log.Info("serving metrics", "addr", ln.Addr().String(), "path", "/metrics")
		}
		ops.served = true
	}
	if err := ops.notify.ready(fmt.Sprintf("serving %s at %s", backing, mountpoint)); err != nil {
		ops.log.Error("cannot notify the service manager", "err", err)
	}
}

// stopping tells the service manager that shutdown has begun.
func (ops *operations) stopping(reason string) {
	if err := ops.notify.stopping(reason); err != nil {
		ops.log.Error("cannot notify the service manager", "err", err)
	}
}

// close stops the metrics server, flushes the journal and releases the
// state directory. Called after the last commit.
func (ops *operations) close() {
	if ops.server != nil && ops.served {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		if err := ops.server.Shutdown(ctx); err != nil {
			ops.server.Close()
		}
		cancel()
	} else {
		for _, ln := range ops.listeners {
			ln.Close()
		}
	}
	if ops.journal != nil {
		if err := ops.journal.Close(); err != nil {
			ops.log.Error("journal not flushed", "err", err)
		}
	}
	if ops.lock != nil {
		ops.lock.Close()
	}
}
