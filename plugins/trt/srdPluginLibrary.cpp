/*
 * The entry points of libsrdeploy_trt_plugins.so, the two TensorRT looks for when it loads a plugin
 * library (trtexec --dynamicPlugins=..., IPluginRegistry::loadLibrary, polygraphy --plugins through
 * the registry):
 *
 *   extern "C" IPluginCreatorInterface* const* getCreators(int32_t& nbCreators);
 *   extern "C" void setLoggerFinder(nvinfer1::ILoggerFinder* finder);
 *
 * Nothing else is exported (exports.map). The creators are function-local statics: constructed on
 * the first getCreators() call, alive until the library is unloaded.
 */
#include "../bucketAttention/bucketAttentionPlugin.h"
#include "../bucketSort/bucketSortPlugin.h"
#include "../crossScaleFold/crossScaleFoldPlugin.h"

#include <type_traits>

using nvinfer1::IPluginCreatorInterface;

// Compile-time proof that each plugin and creator implements every pure virtual of its TensorRT
// interfaces (an abstract class fails these) and is what TensorRT casts it to. Each override is
// marked `override` and built with -Wsuggest-override -Werror, so every signature matches a
// virtual of the headers compiled against.
namespace
{
template <typename Plugin, typename Creator>
constexpr bool isCompletePlugin()
{
    return !std::is_abstract<Plugin>::value && !std::is_abstract<Creator>::value
        && std::is_base_of<nvinfer1::IPluginV3, Plugin>::value
        && std::is_base_of<nvinfer1::IPluginV3OneCore, Plugin>::value
        && std::is_base_of<nvinfer1::IPluginV3OneBuild, Plugin>::value
        && std::is_base_of<nvinfer1::IPluginV3OneRuntime, Plugin>::value
        && std::is_base_of<nvinfer1::IPluginCreatorV3One, Creator>::value;
}
static_assert(
    isCompletePlugin<srdeploy::trt::BucketSortPlugin, srdeploy::trt::BucketSortPluginCreator>(), "BucketSort");
static_assert(isCompletePlugin<srdeploy::trt::BucketAttentionPlugin, srdeploy::trt::BucketAttentionPluginCreator>(),
    "BucketAttention");
static_assert(isCompletePlugin<srdeploy::trt::CrossScaleFoldPlugin, srdeploy::trt::CrossScaleFoldPluginCreator>(),
    "CrossScaleFold");
} // namespace

extern "C" SRD_TRT_API IPluginCreatorInterface* const* getCreators(int32_t& nbCreators)
{
    static srdeploy::trt::BucketSortPluginCreator sBucketSort;
    static srdeploy::trt::BucketAttentionPluginCreator sBucketAttention;
    static srdeploy::trt::CrossScaleFoldPluginCreator sCrossScaleFold;
    static IPluginCreatorInterface* const sCreators[] = {&sBucketSort, &sBucketAttention, &sCrossScaleFold};
    nbCreators = static_cast<int32_t>(sizeof(sCreators) / sizeof(sCreators[0]));
    return sCreators;
}

extern "C" SRD_TRT_API void setLoggerFinder(nvinfer1::ILoggerFinder* finder)
{
    srdeploy::trt::setLoggerFinder(finder);
}
