/// @file io/checkpoint/rtrl_streams_item.hpp
/// @brief RtrlStreams' entries: p/streams and each stream b as an Rtrl under p/s{b}/.
#pragma once

#include <sparse_rtrl/config.hpp>
#include <sparse_rtrl/io/checkpoint/rtrl_item.hpp>
#include <sparse_rtrl/streams/rtrl_streams.hpp>

#include <memory>
#include <stdexcept>
#include <string>

namespace sparse_rtrl {
namespace detail {

template <typename S, typename Sur>
class StreamsItem : public CheckpointItem {
 public:
  StreamsItem(std::string name, RtrlStreams<S, Sur>& streams) : CheckpointItem(std::move(name)), streams_(&streams) {}
  const void* model() const override { return &streams_->model(); }
  void save(io::NpzWriter& w) const override {
    require_streams();
    w.add_scalar(name() + "/streams", std::int64_t(streams_->streams()));
    for (Index b = 0; b < streams_->streams(); ++b) save_stream(w, name() + "/s" + std::to_string(b), streams_->stream(b));
  }
  std::unique_ptr<Staged> stage(io::NpzReader& r, const Context& c) const override {
    require_streams();
    read_expected(r, name() + "/streams", std::int64_t(streams_->streams()), "the streams of this RtrlStreams");
    const std::vector<ParameterMask>& masks = learner_masks(r, c, model(), name());
    auto st = std::make_shared<typename RtrlStreams<S, Sur>::StagedState>();
    for (Index b = 0; b < streams_->streams(); ++b)
      st->push_back(stage_stream(r, name() + "/s" + std::to_string(b), streams_->stream(b), masks));
    RtrlStreams<S, Sur>* streams = streams_;
    return io::make_staged([streams, st]() { streams->restore_state(std::move(*st)); });
  }

 private:
  void require_streams() const {
    if (streams_->streams() == 0)
      throw std::logic_error(
          detail::printable("sparse_rtrl::io::Checkpoint: '" + name() + "' is a moved-from RtrlStreams"));
  }
  RtrlStreams<S, Sur>* streams_;
};

}  // namespace detail

namespace io {

template <typename S, typename Sur>
struct CheckpointTraits<RtrlStreams<S, Sur>> {
  using Item = detail::StreamsItem<S, Sur>;
};

}  // namespace io
}  // namespace sparse_rtrl
