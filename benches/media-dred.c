/*
 * libopus 1.5+ loss tools (DRED, deep PLC, OSCE) on the media-quality example's loss
 * pattern: the C half of benches/media-dred.sh (see there and docs/media.md).
 *
 *   media-dred in.wav fates.txt out.wav bitrate loss_percent dred_duration \
 *              decoder_complexity lookahead lbrr warmup_frames
 *
 * in.wav: 16-bit mono 48 kHz (the example's reference). fates.txt: one character per
 * scored 20 ms frame, '1' if the packet was in the jitter buffer at its turn, '0' if
 * it was concealed (the example's --fates output of a --plc-only run: the path's
 * losses and late packets as the receiver saw them). The input's first warmup_frames
 * frames are encoded and decoded first, unscored, as the example does.
 *
 * Encoder: VoIP, 20 ms, complexity 10, `bitrate` in total (DRED takes its bits from
 * it), OPUS_SET_PACKET_LOSS_PERC(loss_percent), in-band FEC if lbrr, and
 * OPUS_SET_DRED_DURATION(dred_duration, in 10 ms units) if > 0.
 * Decoder: OPUS_SET_COMPLEXITY(decoder_complexity): >= 5 enables the deep PLC,
 * 6 OSCE LACE, 7 OSCE NoLACE (libopus 1.5+). A lost frame i is rebuilt, in order of
 * preference, from the first packet j > i that is in the buffer within `lookahead`
 * frames (the extra jitter-buffer delay this costs): its LBRR if j = i + 1 and lbrr,
 * else its DRED (offset (j - i) frames back) if dred_duration > 0; otherwise it is
 * concealed. out.wav: 48 kHz mono, the input's length, time-aligned with it.
 */
#include <opus.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FRAME 960
#define MAX_PACKET 1500

static int16_t *read_wav(const char *path, long *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char hdr[12];
    if (fread(hdr, 1, 12, f) != 12 || memcmp(hdr, "RIFF", 4) || memcmp(hdr + 8, "WAVE", 4)) {
        fclose(f);
        return NULL;
    }
    for (;;) {
        unsigned char ch[8];
        if (fread(ch, 1, 8, f) != 8) break;
        uint32_t len = ch[4] | ch[5] << 8 | ch[6] << 16 | (uint32_t)ch[7] << 24;
        if (!memcmp(ch, "data", 4)) {
            int16_t *s = malloc(len);
            *n = (long)fread(s, 2, len / 2, f);
            fclose(f);
            return s;
        }
        fseek(f, len + (len & 1), SEEK_CUR);
    }
    fclose(f);
    return NULL;
}

static void put32(FILE *f, uint32_t v) {
    unsigned char b[4] = {v, v >> 8, v >> 16, v >> 24};
    fwrite(b, 1, 4, f);
}

static void write_wav(const char *path, const int16_t *s, long n) {
    FILE *f = fopen(path, "wb");
    fwrite("RIFF", 1, 4, f);
    put32(f, 36 + 2 * n);
    fwrite("WAVEfmt ", 1, 8, f);
    put32(f, 16);
    put32(f, 1 | 1 << 16);        /* PCM, mono */
    put32(f, 48000);
    put32(f, 96000);
    put32(f, 2 | 16 << 16);       /* block align 2, 16 bits */
    fwrite("data", 1, 4, f);
    put32(f, 2 * n);
    fwrite(s, 2, n, f);
    fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 11) {
        fprintf(stderr, "usage: %s in.wav fates.txt out.wav bitrate loss_percent "
                        "dred_duration decoder_complexity lookahead lbrr warmup_frames\n", argv[0]);
        return 2;
    }
    long n;
    int16_t *in = read_wav(argv[1], &n);
    FILE *ff = fopen(argv[2], "r");
    if (!in || !ff) { fprintf(stderr, "cannot read inputs\n"); return 1; }
    static char fates[1 << 20];
    long nf = (long)fread(fates, 1, sizeof fates - 1, ff);
    fclose(ff);
    while (nf > 0 && (fates[nf - 1] == '\n' || fates[nf - 1] == '\r')) nf--;
    int bitrate = atoi(argv[4]), loss = atoi(argv[5]), dred_duration = atoi(argv[6]);
    int dec_complexity = atoi(argv[7]), lookahead = atoi(argv[8]), lbrr = atoi(argv[9]);
    long warm = atol(argv[10]);

    int err;
    OpusEncoder *enc = opus_encoder_create(48000, 1, OPUS_APPLICATION_VOIP, &err);
    opus_encoder_ctl(enc, OPUS_SET_BITRATE(bitrate));
    opus_encoder_ctl(enc, OPUS_SET_COMPLEXITY(10));
    opus_encoder_ctl(enc, OPUS_SET_PACKET_LOSS_PERC(loss));
    opus_encoder_ctl(enc, OPUS_SET_INBAND_FEC(lbrr));
    if (dred_duration > 0 && opus_encoder_ctl(enc, OPUS_SET_DRED_DURATION(dred_duration)) != OPUS_OK) {
        fprintf(stderr, "this libopus has no DRED\n");
        return 1;
    }
    opus_int32 skip;
    opus_encoder_ctl(enc, OPUS_GET_LOOKAHEAD(&skip));
    OpusDecoder *dec = opus_decoder_create(48000, 1, &err);
    opus_decoder_ctl(dec, OPUS_SET_COMPLEXITY(dec_complexity));
    OpusDREDDecoder *dred_dec = opus_dred_decoder_create(&err);
    OpusDRED *dred = opus_dred_alloc(&err);

    /* Frames: the warm-up (input start), the input, one more to flush the look-ahead. */
    long in_frames = (n + FRAME - 1) / FRAME;
    long total = warm + in_frames + (skip + FRAME - 1) / FRAME;
    int16_t *audio = calloc(total * FRAME, 2);
    memcpy(audio, in, warm * FRAME * 2);
    memcpy(audio + warm * FRAME, in, n * 2);
    unsigned char (*pkt)[MAX_PACKET] = malloc(total * MAX_PACKET);
    int *len = malloc(total * sizeof(int));
    long bytes = 0;
    for (long i = 0; i < total; i++) {
        len[i] = opus_encode(enc, audio + i * FRAME, FRAME, pkt[i], MAX_PACKET);
        if (i >= warm) bytes += len[i];
    }
    int16_t *out = calloc(total * FRAME, 2);
    long lost = 0, by_lbrr = 0, by_dred = 0;
    long parsed_for = -1;
    int dred_avail = 0;
    for (long i = 0; i < total; i++) {
        long k = i - warm;
        int ok = k < 0 || k >= nf || fates[k] == '1';
        int16_t *o = out + i * FRAME;
        if (ok) {
            if (opus_decode(dec, pkt[i], len[i], o, FRAME, 0) < 0) return 1;
            continue;
        }
        lost++;
        long j = -1;
        for (long d = 1; d <= lookahead && i + d < total; d++) {
            long kd = k + d;
            if (kd >= nf || fates[kd] == '1') { j = i + d; break; }
        }
        if (j == i + 1 && lbrr && opus_packet_has_lbrr(pkt[j], len[j]) == 1) {
            if (opus_decode(dec, pkt[j], len[j], o, FRAME, 1) < 0) return 1;
            by_lbrr++;
            continue;
        }
        if (j > 0 && dred_duration > 0) {
            if (parsed_for != j) {
                int end = 0;
                int r = opus_dred_parse(dred_dec, dred, pkt[j], len[j], (int)(j - i) * FRAME, 48000, &end, 0);
                dred_avail = r > 0 ? r : 0;
                parsed_for = j;
            }
            /* As opus_demo: DRED present (the parse's positive return) -> decode. */
            if (dred_avail > 0) {
                if (opus_decoder_dred_decode(dec, dred, (int)(j - i) * FRAME, o, FRAME) < 0) return 1;
                by_dred++;
                continue;
            }
        }
        if (opus_decode(dec, NULL, 0, o, FRAME, 0) < 0) return 1;
    }
    write_wav(argv[3], out + warm * FRAME + skip, n);
    long scored = total - warm;
    printf("libopus               %s\n", opus_get_version_string());
    printf("media bitrate         %.1f kbit/s (Opus payload incl. DRED)\n",
           bytes * 8.0 / (scored * 0.02) / 1000.0);
    printf("lost frames           %ld: %ld by LBRR, %ld by DRED, %ld concealed\n",
           lost, by_lbrr, by_dred, lost - by_lbrr - by_dred);
    return 0;
}
