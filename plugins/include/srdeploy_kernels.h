/*
 * srdeploy_kernels.h: the C ABI of libsrdeploy_kernels.so (DESIGN.md section 3).
 *
 * Raw device pointers, sizes, a workspace the caller allocates (query its size first) and a
 * cudaStream_t passed as void* so that this header needs no CUDA header. Every entry point
 * returns an srd_status and never throws. Arguments are validated before anything touches the
 * GPU, so a bad call returns its status on any machine, GPU or not.
 *
 * Tensors are dense, contiguous, row-major. dtype (SRD_FLOAT32, SRD_FLOAT16) applies to the
 * floating-point tensors of a call; index tensors are int32; accumulation is always fp32.
 */
#ifndef SRDEPLOY_KERNELS_H
#define SRDEPLOY_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define SRD_ABI_VERSION 1

/* The library is built with hidden visibility; only these entry points are exported. */
#if defined(__GNUC__)
#define SRD_API __attribute__((visibility("default")))
#else
#define SRD_API
#endif

typedef enum srd_status {
    SRD_SUCCESS = 0,
    SRD_ERR_NULL_POINTER = 1,        /* a required pointer is NULL */
    SRD_ERR_INVALID_SIZE = 2,        /* a size is non-positive or a product overflows int32 */
    SRD_ERR_INVALID_ATTRIBUTE = 3,   /* chunk_size / n_hashes / eps / num_buckets / stride / padding */
    SRD_ERR_UNSUPPORTED_DTYPE = 4,   /* dtype is not SRD_FLOAT32 or SRD_FLOAT16 */
    SRD_ERR_WORKSPACE_TOO_SMALL = 5, /* workspace_bytes < the size the query returned */
    SRD_ERR_UNSUPPORTED = 6,         /* valid, but no kernel variant fits this shape on this GPU (e.g. its
                                        shared memory), found before any launch: a caller may fall back */
    SRD_ERR_CUDA = 7                 /* the CUDA runtime failed (any CUDA error, cudaErrorNotSupported too):
                                        see srd_last_error_message(); not a reason to fall back */
} srd_status;

typedef enum srd_dtype {
    SRD_FLOAT32 = 0,
    SRD_FLOAT16 = 1
} srd_dtype;

/* SRD_ABI_VERSION of the library (a loader refuses a library of another version). */
SRD_API int srd_abi_version(void);
/* Static text naming a status. */
SRD_API const char* srd_status_string(int status);
/* Text of the last failure on the calling thread (validation reason or CUDA error), "" if none. */
SRD_API const char* srd_last_error_message(void);

/* ---------------------------------------------------------------------------------- BucketSort
 * codes [batch, length] int32 in [0, num_buckets) -> order, rank [batch, length] int32.
 * Stable: order[b, p] is the index of the element at sorted position p; rank is its inverse.
 * Codes outside [0, num_buckets) are clamped into it.
 * The size query asks CUB for its temporary storage, so it needs the CUDA runtime and a device
 * (it returns SRD_ERR_CUDA without one); argument errors are reported before that.            */
SRD_API int srd_bucket_sort_workspace_size(int64_t batch, int64_t length, int64_t num_buckets,
                                   size_t* workspace_bytes);
SRD_API int srd_bucket_sort(const int32_t* codes, int32_t* order, int32_t* rank,
                    int64_t batch, int64_t length, int64_t num_buckets,
                    void* workspace, size_t workspace_bytes, void* stream);

/* ----------------------------------------------------------------------------- BucketAttention
 * q [n, length, c], v [n, length, channels] (dtype), order, rank [n, n_hashes*length] int32
 * -> out [n, length, channels] (dtype). Rules: length >= chunk_size > 0, n_hashes > 0,
 * eps >= 0 and finite, c <= 256. Any int32 in order/rank is safe: order is taken mod length
 * (non-negative, as torch's %), rank is clamped into [0, n_hashes*length).                     */
SRD_API int srd_bucket_attention_workspace_size(int64_t n, int64_t length, int64_t c, int64_t channels,
                                        int64_t chunk_size, int64_t n_hashes, int dtype,
                                        size_t* workspace_bytes);
SRD_API int srd_bucket_attention(const void* q, const void* v, const int32_t* order, const int32_t* rank,
                         void* out, int64_t n, int64_t length, int64_t c, int64_t channels,
                         int64_t chunk_size, int64_t n_hashes, float eps, int dtype,
                         void* workspace, size_t workspace_bytes, void* stream);

/* ------------------------------------------------------------------------------ CrossScaleFold
 * scores [n, k, h, w], patches [n, k, channels, kernel_h, kernel_w] (dtype)
 * -> out [n, channels, out_h, out_w] (dtype), out_h = (h-1)*stride - 2*padding + kernel_h
 * (likewise out_w). Rules: stride > 0, padding >= 0, out_h > 0, out_w > 0.                     */
SRD_API int srd_cross_scale_fold_workspace_size(int64_t n, int64_t k, int64_t h, int64_t w,
                                        int64_t channels, int64_t kernel_h, int64_t kernel_w,
                                        int64_t stride, int64_t padding, int dtype,
                                        size_t* workspace_bytes);
SRD_API int srd_cross_scale_fold(const void* scores, const void* patches, void* out,
                         int64_t n, int64_t k, int64_t h, int64_t w, int64_t channels,
                         int64_t kernel_h, int64_t kernel_w, int64_t stride, int64_t padding,
                         int dtype, void* workspace, size_t workspace_bytes, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* SRDEPLOY_KERNELS_H */
