// Command loopback is the FUSE floor for scripts/bench: go-fuse's stock
// loopback node mounted with exactly the options mergefs mounts with
// (mergefs/fs.MountOptions: DirectMountStrict, passthrough disabled, atomic
// O_TRUNC, default_permissions, the same entry and attribute timeouts), so
// that the difference to mergefs is what mergefs itself costs.
//
// Usage: loopback BACKING MOUNTPOINT. Runs in the foreground; SIGINT or
// SIGTERM unmounts (lazily if busy) and exits.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	mergefs "github.com/mergefs/mergefs/fs"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loopback BACKING MOUNTPOINT")
		return 2
	}
	backing, mountpoint := args[0], args[1]
	root, err := gofs.NewLoopbackRoot(backing)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: %v\n", err)
		return 1
	}
	opts := mergefs.MountOptions(backing, false)
	opts.MountOptions.Name = "loopback"
	server, err := gofs.Mount(mountpoint, root, opts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "loopback: mount %s: %v\n", mountpoint, err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "loopback: ready: serving %s at %s\n", backing, mountpoint)

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		server.Wait()
		close(done)
	}()
	select {
	case <-done:
		return 0
	case <-signals:
	}
	if err := server.Unmount(); err != nil {
		fmt.Fprintf(os.Stderr, "loopback: unmount: %v; detaching lazily\n", err)
		if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil {
			fmt.Fprintf(os.Stderr, "loopback: lazy unmount: %v\n", err)
		}
	}
	<-done
	return 0
}
