package hello;

import com.sun.net.httpserver.HttpExchange;
import com.sun.net.httpserver.HttpServer;

import java.io.IOException;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.Executors;

/** The smallest app jarfleet can supervise: reads PORT, serves / and /health, stops on SIGTERM. */
public final class Hello {
    public static void main(String[] args) throws IOException {
        // Without it keep-alive clients wait ~40 ms per response (Nagle + delayed ACK).
        System.setProperty("sun.net.httpserver.nodelay", "true");
        String portEnv = System.getenv("PORT");
        if (portEnv == null) {
            System.err.println("hello: set PORT");
            System.exit(2);
        }
        int port = Integer.parseInt(portEnv.trim());
        String instance = System.getenv().getOrDefault("JARFLEET_INSTANCE", "?");
        long pid = ProcessHandle.current().pid();

        HttpServer server = HttpServer.create(new InetSocketAddress("127.0.0.1", port), 0);
        server.setExecutor(Executors.newFixedThreadPool(8));
        server.createContext("/", ex -> reply(ex, "/".equals(ex.getRequestURI().getPath())
                ? "hello from instance " + instance + " (pid " + pid + ") on port " + port + "\n" : null));
        server.createContext("/health", ex -> reply(ex, "ok\n"));
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            server.stop(1);
            System.out.println("bye");
        }));
        server.start();
        System.out.println("hello: instance " + instance + " listening on port " + port);
    }

    private static void reply(HttpExchange ex, String body) throws IOException {
        int code = body == null ? 404 : 200;
        byte[] b = (body == null ? "not found\n" : body).getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().set("Content-Type", "text/plain; charset=utf-8");
        ex.sendResponseHeaders(code, b.length);
        try (OutputStream os = ex.getResponseBody()) {
            os.write(b);
        }
        ex.close();
    }
}
