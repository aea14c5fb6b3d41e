package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"go.uber.org/zap"

	"github.com/geoproxy/geoproxy/demo"
)

func cmdApp(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("app", "app -region NAME [-listen ADDR] [-log-level LEVEL]\n\nRuns one demo regional app, as 'geoproxy demo' does for each region, until\nSIGINT or SIGTERM: / answers with the region, the instance and the geo headers\ngeoproxy sent; /health passes until 'POST /fail', and again after 'POST /recover'.", stderr)
	region := fs.String("region", "", "name of the region the app plays (us-east, us-west, europe-west, ...)")
	listen := fs.String("listen", ":8000", "address to listen on")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if code, ok := parse(fs, args); !ok {
		return code
	}
	if *region == "" || fs.NArg() > 0 {
		_, _ = fmt.Fprintln(stderr, "geoproxy app: give -region NAME, and nothing else")
		return 2
	}
	return withLogger(*level, stderr, func(log *zap.Logger, ctx context.Context) int {
		ln, err := net.Listen("tcp", *listen)
		if err != nil {
			log.Error("cannot start", zap.Error(err))
			return 1
		}
		app := &demo.App{Region: *region, Addr: instanceName(ln.Addr())}
		srv := &http.Server{Handler: app, ReadHeaderTimeout: 5 * time.Second}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		log.Info("app serving", zap.String("region", app.Region), zap.Stringer("listen", ln.Addr()),
			zap.String("instance", app.Addr))
		select {
		case err := <-served:
			log.Error("app stopped", zap.Error(err))
			return 1
		case <-ctx.Done():
		}
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			log.Error("app stopped", zap.Error(err))
			return 1
		}
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			log.Error("app stopped", zap.Error(err))
			return 1
		}
		log.Info("app stopped")
		return 0
	})
}

// instanceName is how the app names itself in its answers: its address, or
// the host name and port when it listens on every interface (in a container,
// the container's name).
func instanceName(addr net.Addr) string {
	tcp, ok := addr.(*net.TCPAddr)
	if !ok || !tcp.IP.IsUnspecified() {
		return addr.String()
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		return addr.String()
	}
	return net.JoinHostPort(host, fmt.Sprint(tcp.Port))
}
