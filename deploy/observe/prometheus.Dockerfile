# A local stand-in for prom/prometheus, for the engine test only (deploy/observe_test.sh), where
# no registry can be pulled: Prometheus from the distribution's package, run like the official
# image (entry point the server binary, config /etc/prometheus/prometheus.yml, data /prometheus,
# user nobody). Users run the official image (deploy/compose.yaml, profile observe).
# (deploy/observe_test.sh builds it in a context of its own: this file + certs/, the machine's extra CA certificates.)
ARG BASE=debian:bookworm-slim
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
COPY certs/ /usr/local/share/ca-certificates/
RUN rm -f /usr/local/share/ca-certificates/.keep \
 && (update-ca-certificates >/dev/null 2>&1 || true) \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends prometheus \
 && apt-get clean && rm -rf /var/lib/apt/lists/* /usr/share/doc/* /usr/share/man/* \
 && /usr/bin/prometheus --version \
 && mkdir -p /prometheus /etc/prometheus && chown 65534:65534 /prometheus
USER 65534:65534
VOLUME ["/prometheus"]
WORKDIR /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
