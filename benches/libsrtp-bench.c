/*
 * libsrtp's side of the SRTP benchmark: the same measurement as benches/srtp.rs.
 *
 * For each suite and payload size (160 and 1200 bytes behind a 12-byte RTP header,
 * V=2, PT 111, SSRC 0xdecafbad):
 *   protect:   copy the fixed packet into a reused buffer, write the next sequence
 *              number into it, srtp_protect() in place.
 *   unprotect: 1024 consecutive packets are protected up front; a fresh receiving
 *              session (srtp_create, untimed) unprotects packet 0 untimed, then
 *              packets 1..1023 are timed, each copied into the reused buffer and
 *              srtp_unprotect()ed in place; then srtp_dealloc (untimed) and repeat.
 *              Replay protection stays on (window 128), as in Chorus.
 * Each case warms up for 1 s, then takes 60 samples of about 50 ms and prints the
 * median time per packet:
 *   <protect|unprotect> <suite> <payload bytes> <ns per packet>
 *
 * Build: cc -O2 -I<libsrtp>/include libsrtp-bench.c <libsrtp>/libsrtp2.a -lcrypto
 * (benches/compare-libsrtp.sh does this against libsrtp built with OpenSSL).
 */
#define _POSIX_C_SOURCE 199309L
#include <srtp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BATCH 1024
#define SAMPLES 60
#define SSRC 0xdecafbadu

static const char *suites[] = {"AES_CM_128_HMAC_SHA1_80", "AES_CM_128_HMAC_SHA1_32",
                               "AES_256_CM_HMAC_SHA1_80", "AEAD_AES_128_GCM",
                               "AEAD_AES_256_GCM"};
static const int payloads[] = {160, 1200};

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int set_policy(const char *suite, srtp_policy_t *p, int *key_len, int *salt_len)
{
    *salt_len = 14;
    if (strcmp(suite, "AES_CM_128_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
        *key_len = 16;
    } else if (strcmp(suite, "AES_CM_128_HMAC_SHA1_32") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&p->rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&p->rtcp);
        *key_len = 16;
    } else if (strcmp(suite, "AES_256_CM_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtp);
        srtp_crypto_policy_set_aes_cm_256_hmac_sha1_80(&p->rtcp);
        *key_len = 32;
    } else if (strcmp(suite, "AEAD_AES_128_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&p->rtcp);
        *key_len = 16;
        *salt_len = 12;
    } else if (strcmp(suite, "AEAD_AES_256_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtp);
        srtp_crypto_policy_set_aes_gcm_256_16_auth(&p->rtcp);
        *key_len = 32;
        *salt_len = 12;
    } else {
        return -1;
    }
    return 0;
}

/* The same key and salt as the Rust bench: key bytes 0, 1, 2..., salt a0, a1, ... */
static srtp_t session(const char *suite, int outbound)
{
    static unsigned char key[64];
    srtp_policy_t p;
    int key_len, salt_len;
    srtp_t s = NULL;
    memset(&p, 0, sizeof(p));
    if (set_policy(suite, &p, &key_len, &salt_len) != 0)
        return NULL;
    for (int i = 0; i < key_len; i++)
        key[i] = (unsigned char)i;
    for (int i = 0; i < salt_len; i++)
        key[key_len + i] = (unsigned char)(0xa0 + i);
    p.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    p.key = key;
    p.window_size = 128;
    p.allow_repeat_tx = 0;
    if (srtp_create(&s, &p) != srtp_err_status_ok)
        return NULL;
    return s;
}

static int make_packet(unsigned char *buf, uint16_t seq, int payload)
{
    buf[0] = 0x80;
    buf[1] = 111;
    buf[2] = (unsigned char)(seq >> 8);
    buf[3] = (unsigned char)seq;
    memset(buf + 4, 0, 4);
    buf[8] = (unsigned char)(SSRC >> 24);
    buf[9] = (unsigned char)(SSRC >> 16);
    buf[10] = (unsigned char)(SSRC >> 8);
    buf[11] = (unsigned char)SSRC;
    for (int i = 0; i < payload; i++)
        buf[12 + i] = (unsigned char)(i % 251);
    return 12 + payload;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

struct protect_state {
    srtp_t s;
    unsigned char template[2048];
    unsigned char buf[2048 + SRTP_MAX_TRAILER_LEN];
    int len;
    uint16_t seq;
};

/* Protects n packets; returns elapsed ns. */
static double run_protect(struct protect_state *st, long n)
{
    double start = now_ns();
    for (long i = 0; i < n; i++) {
        int len = st->len;
        memcpy(st->buf, st->template, (size_t)st->len);
        st->buf[2] = (unsigned char)(st->seq >> 8);
        st->buf[3] = (unsigned char)st->seq;
        st->seq++;
        if (srtp_protect(st->s, st->buf, &len) != srtp_err_status_ok) {
            fprintf(stderr, "srtp_protect failed\n");
            exit(1);
        }
    }
    return now_ns() - start;
}

struct unprotect_state {
    const char *suite;
    unsigned char (*wire)[2048 + SRTP_MAX_TRAILER_LEN];
    int wire_len;
    unsigned char buf[2048 + SRTP_MAX_TRAILER_LEN];
};

/* Unprotects at least n packets in batches of BATCH - 1; returns timed ns. */
static double run_unprotect(struct unprotect_state *st, long n, long *done)
{
    double total = 0;
    *done = 0;
    while (*done < n) {
        srtp_t rx = session(st->suite, 0);
        int len = st->wire_len;
        if (rx == NULL) {
            fprintf(stderr, "srtp_create failed\n");
            exit(1);
        }
        memcpy(st->buf, st->wire[0], (size_t)len);
        if (srtp_unprotect(rx, st->buf, &len) != srtp_err_status_ok) {
            fprintf(stderr, "srtp_unprotect (first) failed\n");
            exit(1);
        }
        long batch = n - *done < BATCH - 1 ? n - *done : BATCH - 1;
        double start = now_ns();
        for (long i = 1; i <= batch; i++) {
            len = st->wire_len;
            memcpy(st->buf, st->wire[i], (size_t)len);
            if (srtp_unprotect(rx, st->buf, &len) != srtp_err_status_ok) {
                fprintf(stderr, "srtp_unprotect failed\n");
                exit(1);
            }
        }
        total += now_ns() - start;
        *done += batch;
        srtp_dealloc(rx);
    }
    return total;
}

/* Calibrates a sample size of ~50 ms, warms up ~1 s, returns the median ns/packet. */
static double measure(int unprotect, struct protect_state *ps, struct unprotect_state *us)
{
    double samples[SAMPLES];
    long n = 1000, done;
    double t;
    for (;;) {
        t = unprotect ? run_unprotect(us, n, &done) : run_protect(ps, n);
        if (t > 5e6)
            break;
        n *= 4;
    }
    long per_sample = (long)((double)n * 50e6 / t) + 1;
    double warm_until = now_ns() + 1e9;
    while (now_ns() < warm_until) {
        if (unprotect)
            run_unprotect(us, per_sample / 10 + 1, &done);
        else
            run_protect(ps, per_sample / 10 + 1);
    }
    for (int i = 0; i < SAMPLES; i++) {
        t = unprotect ? run_unprotect(us, per_sample, &done) : run_protect(ps, per_sample);
        samples[i] = t / (double)per_sample;
    }
    qsort(samples, SAMPLES, sizeof(samples[0]), cmp_double);
    return (samples[SAMPLES / 2 - 1] + samples[SAMPLES / 2]) / 2;
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL;
    if (srtp_init() != srtp_err_status_ok) {
        fprintf(stderr, "srtp_init failed\n");
        return 1;
    }
    static unsigned char wire[BATCH][2048 + SRTP_MAX_TRAILER_LEN];
    static struct protect_state ps;
    static struct unprotect_state us;
    for (size_t si = 0; si < sizeof(suites) / sizeof(suites[0]); si++) {
        const char *suite = suites[si];
        if (only != NULL && strcmp(only, suite) != 0)
            continue;
        for (size_t pi = 0; pi < sizeof(payloads) / sizeof(payloads[0]); pi++) {
            int payload = payloads[pi];

            memset(&ps, 0, sizeof(ps));
            ps.s = session(suite, 1);
            if (ps.s == NULL) {
                printf("unsupported %s\n", suite);
                break;
            }
            ps.len = make_packet(ps.template, 0, payload);
            printf("protect %s %d %.2f\n", suite, payload, measure(0, &ps, NULL));
            fflush(stdout);
            srtp_dealloc(ps.s);

            srtp_t tx = session(suite, 1);
            for (int i = 0; i < BATCH; i++) {
                int len = make_packet(wire[i], (uint16_t)i, payload);
                if (srtp_protect(tx, wire[i], &len) != srtp_err_status_ok) {
                    fprintf(stderr, "srtp_protect failed\n");
                    return 1;
                }
                us.wire_len = len;
            }
            srtp_dealloc(tx);
            us.suite = suite;
            us.wire = wire;
            printf("unprotect %s %d %.2f\n", suite, payload, measure(1, NULL, &us));
            fflush(stdout);
        }
    }
    srtp_shutdown();
    return 0;
}
